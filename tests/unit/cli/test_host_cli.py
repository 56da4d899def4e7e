"""``donjon host serve --spares N`` and its older ``--spare/--no-spare`` form, up to the launcher.

Only what happens before serving is tested here (CliRunner, no socket, no spare process); the
served pool is tested in ``test_launcher.py`` and ``tests/integration/test_keep_manager.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from donjon.cli.host import spares_setting
from donjon.cli.main import cli
from donjon.errors import ConfigError, UsageError
from donjon.host.pool import DEFAULT_SPARES, PoolStatus
from donjon.host.serve import HostSettings, init_host_state


@pytest.mark.parametrize(
    ("spares", "spare", "expected"),
    [
        (None, None, DEFAULT_SPARES),
        (0, None, 0),
        (4, None, 4),
        (16, None, 16),
        (None, True, 1),
        (None, False, 0),
    ],
    ids=["default", "0", "4", "16", "--spare", "--no-spare"],
)
def test_spares_setting(spares: int | None, spare: bool | None, expected: int) -> None:
    assert spares_setting(spares, spare) == expected


@pytest.mark.parametrize(("spares", "spare"), [(2, False), (1, True), (0, False)])
def test_spares_and_the_older_flag_are_not_both_given(spares: int, spare: bool) -> None:
    with pytest.raises(UsageError, match="not both"):
        spares_setting(spares, spare)


@pytest.mark.parametrize("value", ["-1", "17", "many"])
def test_out_of_range_spares_are_a_usage_error(tmp_path: Path, value: str) -> None:
    result = CliRunner().invoke(
        cli, ["host", "serve", "--state-dir", str(tmp_path / "hs"), "--spares", value]
    )
    assert result.exit_code == 2
    assert "--spares" in result.output
    assert not (tmp_path / "hs").exists()  # refused before anything was made


def test_both_forms_are_refused_before_serving(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["host", "serve", "--state-dir", str(tmp_path / "hs"), "--spares", "3", "--no-spare"]
    )
    assert isinstance(result.exception, UsageError)
    assert result.exception.exit_code == 2
    assert "give --spares N or --no-spare, not both" in result.exception.diagnostics()
    assert not (tmp_path / "hs").exists()


def test_the_help_names_the_range_and_the_cost() -> None:
    result = CliRunner().invoke(cli, ["host", "serve", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--spares" in text and "0-16; default 1" in text and "MiB RSS" in text
    assert "--spare / --no-spare" in text


def test_host_settings_keep_one_spare_by_default(tmp_path: Path) -> None:
    assert HostSettings("127.0.0.1", 0, tmp_path).spares == DEFAULT_SPARES == 1


def test_init_host_state_hands_the_pool_size_to_its_launcher(tmp_path: Path) -> None:
    state = init_host_state(tmp_path / "hs", spares=0)
    try:
        assert state.launcher.status() == PoolStatus(0, 0, 0, 0, closed=False)
    finally:
        state.launcher.close()
    with pytest.raises(ConfigError, match=re.escape("0..16")):
        init_host_state(tmp_path / "hs", spares=17)
