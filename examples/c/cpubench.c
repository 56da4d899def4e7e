/* cpubench: a deterministic CPU benchmark, built both to wasm32-wasi and natively.
 *
 *   cpubench [-t] sha256 MIB     SHA-256 (FIPS 180-4) of MIB MiB of the bytes 0,1,...,255,0,1,...
 *   cpubench [-t] fannkuch N     fannkuch-redux(N): checksum and maximum flips
 *
 * stdout is deterministic (the tests compare it with Python's hashlib). With -t, the time spent
 * in the computation alone is printed on stderr as "cpubench: <ms> ms", so a benchmark can
 * compare compute time without process start-up.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) {
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    }
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static void sha256_mib(long mib, char hex[65]) {
    static uint8_t buf[1024 * 1024];
    for (size_t i = 0; i < sizeof buf; i++) {
        buf[i] = (uint8_t)i;
    }
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    for (long m = 0; m < mib; m++) {
        for (size_t off = 0; off < sizeof buf; off += 64) {
            sha256_block(h, buf + off);
        }
    }
    /* The message is a whole number of blocks: the padding is one block of its own. */
    uint8_t pad[64] = {0x80};
    uint64_t bits = (uint64_t)mib * sizeof buf * 8;
    for (int i = 0; i < 8; i++) {
        pad[63 - i] = (uint8_t)(bits >> (8 * i));
    }
    sha256_block(h, pad);
    for (int i = 0; i < 8; i++) {
        snprintf(hex + 8 * i, 9, "%08x", h[i]);
    }
}

/* fannkuch-redux, after the Computer Language Benchmarks Game reference program. */
static void fannkuch(int n, int *checksum, int *maxflips) {
    int perm[16], perm1[16], count[16];
    int r = n, permcount = 0;
    *checksum = 0;
    *maxflips = 0;
    for (int i = 0; i < n; i++) {
        perm1[i] = i;
    }
    for (;;) {
        for (; r != 1; r--) {
            count[r - 1] = r;
        }
        memcpy(perm, perm1, sizeof perm);
        int flips = 0, k;
        while ((k = perm[0]) != 0) {
            for (int i = 0, j = k; i < j; i++, j--) {
                int t = perm[i]; perm[i] = perm[j]; perm[j] = t;
            }
            flips++;
        }
        if (flips > *maxflips) {
            *maxflips = flips;
        }
        *checksum += (permcount % 2 == 0) ? flips : -flips;
        for (;;) {
            if (r == n) {
                return;
            }
            int p0 = perm1[0];
            for (int i = 0; i < r; i++) {
                perm1[i] = perm1[i + 1];
            }
            perm1[r] = p0;
            if (--count[r] > 0) {
                break;
            }
            r++;
        }
        permcount++;
    }
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    int timed = 0, a = 1;
    if (argc > 1 && strcmp(argv[1], "-t") == 0) {
        timed = 1;
        a = 2;
    }
    if (argc != a + 2) {
        fprintf(stderr, "usage: cpubench [-t] sha256 MIB | cpubench [-t] fannkuch N\n");
        return 2;
    }
    long arg = atol(argv[a + 1]);
    double t0 = now_ms();
    if (strcmp(argv[a], "sha256") == 0 && arg >= 0) {
        char hex[65];
        sha256_mib(arg, hex);
        printf("sha256 %ld MiB: %s\n", arg, hex);
    } else if (strcmp(argv[a], "fannkuch") == 0 && arg >= 3 && arg <= 12) {
        int checksum, maxflips;
        fannkuch((int)arg, &checksum, &maxflips);
        printf("%d\nPfannkuchen(%ld) = %d\n", checksum, arg, maxflips);
    } else {
        fprintf(stderr, "cpubench: bad arguments (sha256 MIB>=0 | fannkuch 3..12)\n");
        return 2;
    }
    if (timed) {
        fprintf(stderr, "cpubench: %.1f ms\n", now_ms() - t0);
    }
    return 0;
}
