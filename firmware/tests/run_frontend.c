/* Streams a record through the C front-end: input file = u32 samples, u32 peaks, int32 ADC samples,
 * u32 R-peak sample indices; each peak is reported LATENCY samples after it (as a detector would, late
 * enough for its window). Output file: per beat, u32 R-peak sample, the int8 wave window, the PW_FE_FEATURES int8 input features. */
#include <stdio.h>
#include <stdlib.h>

#include "pw_frontend.h"

#ifdef PW_MEASURE
#include "pw_cycles.h" /* Cortex-M4 under QEMU: SysTick ticks spent in the front-end */
#endif

#define LATENCY 150u

static pw_frontend_t fe; /* static: the caller owns it */

int main(int argc, char **argv) {
    if (argc < 3) {
        printf("usage: run_frontend IN.bin OUT.bin\n");
        return 1;
    }
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    uint32_t n, m;
    if (!in || !out || fread(&n, 4, 1, in) != 1 || fread(&m, 4, 1, in) != 1) return 1;
    int32_t *x = malloc(n * sizeof *x); /* the test harness may allocate; the front-end does not */
    uint32_t *peaks = malloc((m + 1) * sizeof *peaks);
    if (!x || !peaks || fread(x, 4, n, in) != n || fread(peaks, 4, m, in) != m) return 1;
    pw_frontend_init(&fe);
    uint32_t next = 0, beats = 0, peak;
    int8_t wave[PW_FE_WINDOW], rr[PW_FE_FEATURES];
#ifdef PW_MEASURE
    unsigned long ticks = 0;
    pw_systick_start();
#endif
    for (uint32_t i = 0; i < n; i++) {
#ifdef PW_MEASURE
        uint32_t t0 = PW_SYST_CVR;
#endif
        pw_frontend_push_sample(&fe, x[i]);
        while (next < m && peaks[next] + LATENCY <= i) {
            if (pw_frontend_push_peak(&fe, peaks[next]) != PW_OK) { printf("peak %lu refused\n", (unsigned long)peaks[next]); return 1; }
            next++;
        }
        while (pw_frontend_next_beat(&fe, wave, rr, &peak)) {
#ifdef PW_MEASURE
            ticks += pw_systick_elapsed(t0, PW_SYST_CVR); /* file output is not the front-end's time */
#endif
            fwrite(&peak, 4, 1, out);
            fwrite(wave, 1, sizeof wave, out);
            fwrite(rr, 1, sizeof rr, out);
            beats++;
#ifdef PW_MEASURE
            t0 = PW_SYST_CVR;
#endif
        }
#ifdef PW_MEASURE
        ticks += pw_systick_elapsed(t0, PW_SYST_CVR);
#endif
    }
    printf("beats %lu\nsamples %lu\n", (unsigned long)beats, (unsigned long)n);
#ifdef PW_MEASURE
    printf("ticks_total %lu\ncalibration_instructions %lu calibration_ticks %lu\n", ticks, 2000000ul,
           (unsigned long)pw_cycles_calibrate(1000000u));
    printf("frontend_bytes %u\n", (unsigned)sizeof fe);
#endif
    fclose(out);
    return 0;
}
