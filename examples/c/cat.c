/* cat: copies stdin to stdout byte for byte (binary safe). */
#include <stdio.h>

int main(void) {
    static char buf[64 * 1024];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        if (fwrite(buf, 1, n, stdout) != n) {
            perror("cat: write");
            return 1;
        }
    }
    if (ferror(stdin)) {
        perror("cat: read");
        return 1;
    }
    return 0;
}
