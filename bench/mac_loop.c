/* Scalar C baseline for bench/infer.py: int8 x int8 -> int32 dense layers, timed in C.
 *
 * Runs on: host. Built by bench/infer.py with
 *     gcc -O2 -fno-tree-vectorize -fno-tree-slp-vectorize -o mac_loop mac_loop.c
 * (no SIMD: the boards' cores have none that MicroPython could use either).
 *
 * Usage: mac_loop SIZES TARGET_MS     e.g.  mac_loop 42,32,16,7 300
 * Prints: "<macs per forward> <best ns per forward> <ns per MAC>".
 *        mac_loop SIZES -n N            exactly N forwards, untimed (for bench/mac_callgrind.py,
 *                                       which counts instructions: N and 2N forwards, the difference)
 * Prints: "<macs per forward>".
 *
 * Each layer computes what device/infer.py computes: acc = sum_i w[j][i] * (x_i - zp_x) + b_j,
 * then zp_z + R(acc, s) with TFLite rounding, clamped to int8, ReLU (last layer: linear).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_LAYERS 8
#define MAX_UNITS 1024

static int8_t weights[MAX_LAYERS][MAX_UNITS * MAX_UNITS / 4];
static int32_t biases[MAX_LAYERS][MAX_UNITS];
static int8_t acts[MAX_LAYERS + 1][MAX_UNITS];

/* int32 acc -> int, times 2**-s, TFLite rounding (see device/fixedpoint.py). */
static inline int32_t rounding_rshift(int32_t acc, int s) {
    if (s == 0) return acc;
    int32_t h = (acc >> 1) + (acc & 1);
    int e = s - 1;
    int32_t mask = (1 << e) - 1;
    int32_t threshold = (mask >> 1) + (h < 0);
    return (h >> e) + ((h & mask) > threshold);
}

__attribute__((noinline)) static void dense(const int8_t *x, const int8_t *w, const int32_t *b,
                                            int8_t *y, int n_in, int n_out, int zp_x, int s,
                                            int zp_z, int relu) {
    for (int j = 0; j < n_out; j++) {
        const int8_t *wj = w + j * n_in;
        int32_t acc = 0;
        for (int i = 0; i < n_in; i++) acc += wj[i] * (x[i] - zp_x);
        int32_t z = zp_z + rounding_rshift(acc + b[j], s);
        if (z < -128) z = -128;
        if (z > 127) z = 127;
        if (relu && z < zp_z) z = zp_z;
        y[j] = (int8_t)z;
    }
}

/* One forward pass of input r (a new input each forward: nothing to hoist) -> its first output. */
__attribute__((noinline)) static uint8_t forward(const int *sizes, int n, long r) {
    acts[0][0] = (int8_t)r;
    for (int k = 0; k + 1 < n; k++)
        dense(acts[k], weights[k], biases[k], acts[k + 1], sizes[k], sizes[k + 1], -3, 7, 5,
              k + 2 < n);
    return (uint8_t)acts[n - 1][0];
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
    int counted = argc == 4 && strcmp(argv[2], "-n") == 0;
    if (argc != 3 && !counted) {
        fprintf(stderr, "usage: mac_loop SIZES TARGET_MS | mac_loop SIZES -n N\n");
        return 2;
    }
    int sizes[MAX_LAYERS + 1], n = 0;
    for (char *tok = strtok(argv[1], ","); tok && n <= MAX_LAYERS; tok = strtok(NULL, ","))
        sizes[n++] = atoi(tok);
    long macs = 0;
    for (int k = 0; k + 1 < n; k++) {
        if (sizes[k] < 1 || sizes[k] > MAX_UNITS || sizes[k + 1] < 1 ||
            sizes[k + 1] > MAX_UNITS || (long)sizes[k] * sizes[k + 1] > MAX_UNITS * MAX_UNITS / 4) {
            fprintf(stderr, "mac_loop: layer %d size out of range\n", k);
            return 2;
        }
        macs += (long)sizes[k] * sizes[k + 1];
    }
    if (n < 2) {
        fprintf(stderr, "mac_loop: need at least two sizes\n");
        return 2;
    }
    double target = atof(argv[2]) * 1e6;
    srand(1);
    for (int k = 0; k + 1 < n; k++) {
        for (long i = 0; i < (long)sizes[k] * sizes[k + 1]; i++)
            weights[k][i] = (int8_t)(rand() % 255 - 127);
        for (int j = 0; j < sizes[k + 1]; j++) biases[k][j] = rand() % 2001 - 1000;
    }
    for (int i = 0; i < sizes[0]; i++) acts[0][i] = (int8_t)(rand() % 256 - 128);

    unsigned checksum = 0;
    if (counted) {
        long reps = atol(argv[3]);
        for (long r = 0; r < reps; r++) checksum += forward(sizes, n, r);
        printf("%ld\n", macs);
        fprintf(stderr, "checksum %u\n", checksum);
        return 0;
    }
    double best = 1e300;
    long reps = 1;
    for (int round = 0; round < 5; round++) {
        double t0, dt;
        for (;;) {
            t0 = now_ns();
            for (long r = 0; r < reps; r++) checksum += forward(sizes, n, r);
            dt = now_ns() - t0;
            if (dt >= target / 5 || reps > (1L << 40)) break;
            reps *= 2;
        }
        if (dt / reps < best) best = dt / reps;
    }
    printf("%ld %.1f %.4f\n", macs, best, best / macs);
    fprintf(stderr, "checksum %u\n", checksum);
    return 0;
}
