/* memhog: allocates and touches 1 MiB blocks until malloc fails, then aborts (a trap),
 * as a Rust or C++ program does when an allocation fails.
 *
 *   memhog [MAX_MIB]    stop cleanly after MAX_MIB MiB (default 4096: until failure)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK (1024 * 1024)

/* Every block is linked into a list, so the compiler cannot elide the allocations. */
struct block {
    struct block *next;
};
static struct block *volatile head;

int main(int argc, char **argv) {
    long max_mib = argc > 1 ? atol(argv[1]) : 4096;
    long mib = 0;
    while (mib < max_mib) {
        char *p = malloc(BLOCK);
        if (!p) {
            fprintf(stderr, "memhog: malloc failed after %ld MiB\n", mib);
            abort();
        }
        memset(p, (int)(mib & 0xff), BLOCK);
        ((struct block *)p)->next = head;
        head = (struct block *)p;
        mib++;
    }
    printf("memhog: allocated %ld MiB\n", mib);
    return 0;
}
