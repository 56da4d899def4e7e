/* net_client: a small netcat over a connection the Keep made for it (a `connect` entry).
 *
 *   net_client [-n NAME] [MESSAGE...]
 *
 * The connection is the [[files]] entry named NAME (default "server"; without one, fd 3), found
 * through FD_NAMES. With MESSAGE arguments it sends them, joined by spaces and ended by a
 * newline, then half-closes; without, it forwards stdin to the connection and half-closes at
 * end of input. Everything the peer sends is copied to stdout until the peer closes. One
 * poll() watches stdin and the socket together.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fd_by_name(const char *name, int fallback) {
    const char *p = getenv("FD_NAMES");
    if (p == NULL) return fallback;
    size_t want = strlen(name);
    for (int fd = 0;; fd++) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == want && strncmp(p, name, len) == 0) return fd;
        if (end == NULL) return -1;
        p = end + 1;
    }
}

static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *name = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "n:")) != -1) {
        if (opt == 'n') name = optarg;
        else {
            fprintf(stderr, "usage: net_client [-n NAME] [MESSAGE...]\n");
            return 2;
        }
    }
    int sock = fd_by_name(name ? name : "server", 3);
    if (sock < 0 && name == NULL) sock = 3;
    if (sock < 0) {
        fprintf(stderr, "net_client: FD_NAMES has no fd named \"%s\"\n", name);
        return 2;
    }
    static char buf[64 * 1024];
    int reading_stdin = optind >= argc;
    if (!reading_stdin) {
        size_t len = 0;
        for (int i = optind; i < argc; i++) {
            size_t n = strlen(argv[i]);
            if (len + n + 2 > sizeof buf) break;
            memcpy(buf + len, argv[i], n);
            len += n;
            buf[len++] = i + 1 < argc ? ' ' : '\n';
        }
        if (write_all(sock, buf, len) < 0) {
            perror("net_client: send");
            return 1;
        }
        shutdown(sock, SHUT_WR);
    }
    for (;;) {
        struct pollfd p[2] = {{sock, POLLIN, 0}, {0, POLLIN, 0}};
        if (poll(p, reading_stdin ? 2 : 1, -1) < 0) {
            if (errno == EINTR) continue;
            perror("net_client: poll");
            return 1;
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(sock, buf, sizeof buf);
            if (n == 0) break;
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) continue;
                perror("net_client: recv");
                return 1;
            }
            if (write_all(1, buf, (size_t)n) < 0) return 1;
        }
        if (reading_stdin && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = read(0, buf, sizeof buf);
            if (n > 0) {
                if (write_all(sock, buf, (size_t)n) < 0) {
                    perror("net_client: send");
                    return 1;
                }
            } else if (n == 0) {
                reading_stdin = 0;
                shutdown(sock, SHUT_WR);
            } else if (errno != EAGAIN && errno != EINTR) {
                perror("net_client: stdin");
                return 1;
            }
        }
    }
    return 0;
}
