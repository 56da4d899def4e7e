/* readfile: prints files, e.g. from a preopened directory.
 *
 *   readfile PATH...         print each file to stdout
 *   readfile -w PATH TEXT    write TEXT (and a newline) to PATH
 *
 * Errors print "readfile: PATH: <reason>" on stderr and exit 1.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

static int print_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "readfile: %s: %s\n", path, strerror(errno));
        return 1;
    }
    char buf[16 * 1024];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        fwrite(buf, 1, n, stdout);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "readfile: %s: read error\n", path);
        return 1;
    }
    return 0;
}

static int write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "readfile: %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(f, "%s\n", text);
    if (fclose(f) != 0) {
        fprintf(stderr, "readfile: %s: %s\n", path, strerror(errno));
        return 1;
    }
    printf("wrote %s\n", path);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "-w") == 0) {
        return write_file(argv[2], argv[3]);
    }
    if (argc < 2) {
        fprintf(stderr, "usage: readfile PATH... | readfile -w PATH TEXT\n");
        return 2;
    }
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        rc |= print_file(argv[i]);
    }
    return rc;
}
