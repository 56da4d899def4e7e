/* trap: prints a line, then executes `unreachable` (a Wasm trap). */
#include <stdio.h>

int main(void) {
    puts("about to trap");
    fflush(stdout);
    __builtin_trap();
}
