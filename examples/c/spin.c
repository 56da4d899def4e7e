/* spin: loops forever without calling the host; only a deadline stops it. */
#include <stdio.h>

int main(void) {
    puts("spinning");
    fflush(stdout);
    volatile unsigned long counter = 0;
    for (;;) {
        counter++;
    }
}
