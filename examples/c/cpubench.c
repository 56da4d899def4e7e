/* cpubench: a deterministic CPU benchmark, built both to wasm32-wasi and natively.
 *
 *   cpubench [-t] sha256 MIB     SHA-256 (FIPS 180-4) of MIB MiB of the bytes 0,1,...,255,0,1,...
 *   cpubench [-t] fannkuch N     fannkuch-redux(N): checksum and maximum flips
 *   cpubench [-t] crc32 MIB      CRC-32 (IEEE, table-driven, a byte at a time) of the same bytes
 *   cpubench [-t] nbody STEPS    five bodies under gravity: energy before and after STEPS steps
 *   cpubench [-t] mandelbrot N   points of an N x N grid over [-2,1] x [-1.5,1.5] that stay
 *                                bounded for 64 iterations
 *
 * stdout is deterministic (the tests compare it with Python's hashlib). With -t, the time spent
 * in the computation alone is printed on stderr as "cpubench: <ms> ms", so a benchmark can
 * compare compute time without process start-up.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The same floating-point operations natively and in Wasm: no fused multiply-add, so every
 * result is bit-identical across targets and the tests can compare them exactly. */
#pragma STDC FP_CONTRACT OFF

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

static uint32_t crc32_mib(long mib) {
    static uint8_t buf[1024 * 1024];
    uint32_t table[256];
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        }
        table[n] = c;
    }
    for (size_t i = 0; i < sizeof buf; i++) {
        buf[i] = (uint8_t)i;
    }
    uint32_t crc = 0xffffffffu;
    for (long m = 0; m < mib; m++) {
        for (size_t i = 0; i < sizeof buf; i++) {
            crc = table[(crc ^ buf[i]) & 0xff] ^ (crc >> 8);
        }
    }
    return crc ^ 0xffffffffu;
}

/* Five bodies (a sun and four planets, in units where G = 1), leapfrog-free Euler steps. */
#define BODIES 5
struct body { double x, y, z, vx, vy, vz, m; };

static void nbody_init(struct body *b) {
    static const double init[BODIES][7] = {
        {0, 0, 0, 0, 0, 0, 39.47841760435743},
        {4.84, -1.16, -0.10, 0.606, 2.81, -0.025, 0.0377},
        {8.34, 4.12, -0.40, -1.01, 1.82, 0.008, 0.0113},
        {12.89, -15.11, -0.22, 1.08, 0.868, -0.011, 0.0017},
        {15.37, -25.91, 0.17, 0.979, 0.594, -0.034, 0.0020},
    };
    for (int i = 0; i < BODIES; i++) {
        b[i] = (struct body){init[i][0], init[i][1], init[i][2], init[i][3], init[i][4],
                             init[i][5], init[i][6]};
    }
}

static double nbody_energy(const struct body *b) {
    double e = 0;
    for (int i = 0; i < BODIES; i++) {
        e += 0.5 * b[i].m * (b[i].vx * b[i].vx + b[i].vy * b[i].vy + b[i].vz * b[i].vz);
        for (int j = i + 1; j < BODIES; j++) {
            double dx = b[i].x - b[j].x, dy = b[i].y - b[j].y, dz = b[i].z - b[j].z;
            e -= b[i].m * b[j].m / sqrt(dx * dx + dy * dy + dz * dz);
        }
    }
    return e;
}

static void nbody_steps(struct body *b, long steps, double dt) {
    for (long s = 0; s < steps; s++) {
        for (int i = 0; i < BODIES; i++) {
            for (int j = i + 1; j < BODIES; j++) {
                double dx = b[i].x - b[j].x, dy = b[i].y - b[j].y, dz = b[i].z - b[j].z;
                double d2 = dx * dx + dy * dy + dz * dz;
                double mag = dt / (d2 * sqrt(d2));
                b[i].vx -= dx * b[j].m * mag; b[i].vy -= dy * b[j].m * mag; b[i].vz -= dz * b[j].m * mag;
                b[j].vx += dx * b[i].m * mag; b[j].vy += dy * b[i].m * mag; b[j].vz += dz * b[i].m * mag;
            }
        }
        for (int i = 0; i < BODIES; i++) {
            b[i].x += dt * b[i].vx; b[i].y += dt * b[i].vy; b[i].z += dt * b[i].vz;
        }
    }
}

static long mandelbrot(long n) {
    long inside = 0;
    for (long py = 0; py < n; py++) {
        double ci = -1.5 + 3.0 * (double)py / (double)n;
        for (long px = 0; px < n; px++) {
            double cr = -2.0 + 3.0 * (double)px / (double)n;
            double zr = 0, zi = 0;
            int k = 0;
            for (; k < 64 && zr * zr + zi * zi <= 4.0; k++) {
                double t = zr * zr - zi * zi + cr;
                zi = 2.0 * zr * zi + ci;
                zr = t;
            }
            inside += k == 64;
        }
    }
    return inside;
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
        fprintf(stderr, "usage: cpubench [-t] sha256|crc32 MIB | fannkuch N | nbody STEPS | "
                        "mandelbrot N\n");
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
    } else if (strcmp(argv[a], "crc32") == 0 && arg >= 0) {
        printf("crc32 %ld MiB: %08x\n", arg, crc32_mib(arg));
    } else if (strcmp(argv[a], "nbody") == 0 && arg >= 0) {
        struct body b[BODIES];
        nbody_init(b);
        printf("%.9f\n", nbody_energy(b));
        nbody_steps(b, arg, 0.001);
        printf("%.9f\n", nbody_energy(b));
    } else if (strcmp(argv[a], "mandelbrot") == 0 && arg >= 1 && arg <= 100000) {
        printf("mandelbrot %ld: %ld inside\n", arg, mandelbrot(arg));
    } else {
        fprintf(stderr, "cpubench: bad arguments (sha256|crc32 MIB>=0 | fannkuch 3..12 | "
                        "nbody STEPS>=0 | mandelbrot 1..100000)\n");
        return 2;
    }
    if (timed) {
        fprintf(stderr, "cpubench: %.1f ms\n", now_ms() - t0);
    }
    return 0;
}
