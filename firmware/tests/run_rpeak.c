/* Streams a record of raw ADC samples through the C front-end's band-pass and the C R-peak detector.
 * Input file: u32 n, then n int32 ADC samples. Modes:
 *   0  sample by sample: pw_frontend_push_sample (the band-pass), pw_rpeak_push on its output, peaks
 *      taken after every sample; OUT = the R peaks (u32 each)
 *   S  (S > 0) the same in chunks of pseudo-random sizes 1..3000 (seed S): each chunk is band-passed, then
 *      given to pw_rpeak_process with room for 4 peaks, the rest taken with pw_rpeak_next; OUT = the R peaks
 *  -1  the board's path, pw_frontend_push_adc per sample then pw_frontend_flush; OUT = per beat the u32
 *      R-peak sample, the int8 wave window and the PW_FE_FEATURES int8 input features (run_frontend.c's format)
 * With PW_MEASURE (Cortex-M4 under QEMU) it prints SysTick ticks spent in the detector (modes 0) or in
 * the whole front-end (mode -1), and the state sizes. */
#include <stdio.h>
#include <stdlib.h>

#include "pw_frontend.h"
#include "pw_rpeak.h"

#ifdef PW_MEASURE
#include "pw_cycles.h"
#define TICK_START() uint32_t t0 = PW_SYST_CVR
#define TICK_STOP() ticks += pw_systick_elapsed(t0, PW_SYST_CVR)
#else
#define TICK_START() do { } while (0)
#define TICK_STOP() do { } while (0)
#endif

#define CHUNK_MAX 3000u

static pw_frontend_t fe; /* static: the caller owns them */
static pw_rpeak_t det;
static int32_t buf[CHUNK_MAX];

static uint32_t xorshift(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        printf("usage: run_rpeak IN.bin OUT.bin MODE\n");
        return 1;
    }
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    const long mode = strtol(argv[3], 0, 10);
    uint32_t n;
    if (!in || !out || fread(&n, 4, 1, in) != 1) return 1;
    int32_t *x = malloc(n * sizeof *x); /* the test harness may allocate; the front-end and detector do not */
    if (!x || fread(x, 4, n, in) != n) return 1;
    pw_frontend_init(&fe);
    pw_rpeak_init(&det);
    uint32_t peaks = 0, beats = 0, r, latency = 0; /* latency: samples from an R peak to its report (mode 0) */
    unsigned long ticks = 0;
#ifdef PW_MEASURE
    pw_systick_start();
#endif
    if (mode == 0) {
        for (uint32_t i = 0; i < n; i++) {
            pw_frontend_push_sample(&fe, x[i]);
            const int32_t y = fe.ring[i % PW_FE_RING];
            TICK_START();
            const pw_status_t st = pw_rpeak_push(&det, y);
            int got = pw_rpeak_next(&det, &r);
            TICK_STOP();
            if (st != PW_OK) { printf("push %lu: status %d\n", (unsigned long)i, (int)st); return 1; }
            while (got) {
                fwrite(&r, 4, 1, out);
                peaks++;
                if (i - r > latency) latency = i - r;
                got = pw_rpeak_next(&det, &r);
            }
        }
    } else if (mode > 0) {
        uint32_t seed = (uint32_t)mode, found[4], k;
        for (uint32_t i = 0; i < n;) {
            uint32_t len = 1 + xorshift(&seed) % CHUNK_MAX;
            if (len > n - i) len = n - i;
            for (uint32_t j = 0; j < len; j++) {
                pw_frontend_push_sample(&fe, x[i + j]);
                buf[j] = fe.ring[(i + j) % PW_FE_RING];
            }
            if (pw_rpeak_process(&det, buf, len, found, 4, &k) != PW_OK) { printf("chunk at %lu refused\n", (unsigned long)i); return 1; }
            fwrite(found, 4, k, out);
            peaks += k;
            while (pw_rpeak_next(&det, &r)) { fwrite(&r, 4, 1, out); peaks++; }
            i += len;
        }
    } else {
        int8_t wave[PW_FE_WINDOW], rr[PW_FE_FEATURES];
        for (uint32_t i = 0; i <= n; i++) {
            TICK_START();
            const pw_status_t st = i < n ? pw_frontend_push_adc(&fe, &det, x[i]) : pw_frontend_flush(&fe, &det);
            int got = pw_frontend_next_beat(&fe, wave, rr, &r);
            TICK_STOP();
            if (st != PW_OK) { printf("sample %lu: status %d\n", (unsigned long)i, (int)st); return 1; }
            while (got) {
                fwrite(&r, 4, 1, out);
                fwrite(wave, 1, sizeof wave, out);
                fwrite(rr, 1, sizeof rr, out);
                beats++;
                got = pw_frontend_next_beat(&fe, wave, rr, &r);
            }
        }
        peaks = fe.n_peaks;
    }
    if (mode >= 0) {
        pw_rpeak_flush(&det);
        while (pw_rpeak_next(&det, &r)) { fwrite(&r, 4, 1, out); peaks++; }
    }
    printf("samples %lu\npeaks %lu\nbeats %lu\nlate_peaks %lu\ndropped %lu\nmax_latency %lu\n", (unsigned long)n,
           (unsigned long)peaks, (unsigned long)beats, (unsigned long)fe.late_peaks, (unsigned long)det.dropped,
           (unsigned long)latency);
#ifdef PW_MEASURE
    printf("ticks_total %lu\ncalibration_instructions %lu calibration_ticks %lu\n", ticks, 2000000ul,
           (unsigned long)pw_cycles_calibrate(1000000u));
    printf("rpeak_bytes %u\nfrontend_bytes %u\n", (unsigned)sizeof det, (unsigned)sizeof fe);
#else
    (void)ticks;
#endif
    fclose(out);
    return 0;
}
