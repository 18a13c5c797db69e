/* Template features of a stream of beat windows (pw_template.c), for the equality test with Python and
 * the firmware bench. Input file: u32 n, then per beat an int16 flag (1: a new lead or record starts, the
 * template starts again) and PW_FE_WINDOW int16 window values in 1/64 R amplitudes. Output file: per beat
 * the PW_TM_FEATURES features as int32 Q16, then as the model's int8 inputs. With PW_MEASURE (Cortex-M4
 * under QEMU) it prints the SysTick ticks spent in pw_template_features and the state size. */
#include <stdio.h>
#include <stdlib.h>

#include "pw_template.h"

#ifdef PW_MEASURE
#include "pw_cycles.h"
#endif

static pw_template_t tp; /* static: the caller owns it */

int main(int argc, char **argv) {
    if (argc < 3) {
        printf("usage: run_template IN.bin OUT.bin\n");
        return 1;
    }
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    uint32_t n;
    if (!in || !out || fread(&n, 4, 1, in) != 1) return 1;
    int16_t row[PW_FE_WINDOW + 1];
    int32_t q16[PW_TM_FEATURES];
    int8_t q8[PW_TM_FEATURES];
#ifdef PW_MEASURE
    unsigned long ticks = 0;
    pw_systick_start();
#endif
    for (uint32_t i = 0; i < n; i++) {
        if (fread(row, 2, PW_FE_WINDOW + 1, in) != PW_FE_WINDOW + 1) return 1;
        if (row[0]) pw_template_init(&tp);
#ifdef PW_MEASURE
        const uint32_t t0 = PW_SYST_CVR;
#endif
        pw_template_features(&tp, row + 1, q16);
        for (int f = 0; f < PW_TM_FEATURES; f++) q8[f] = pw_template_quantize(q16[f], PW_TM_FIRST + f);
#ifdef PW_MEASURE
        ticks += pw_systick_elapsed(t0, PW_SYST_CVR);
#endif
        fwrite(q16, 4, PW_TM_FEATURES, out);
        fwrite(q8, 1, PW_TM_FEATURES, out);
    }
    printf("beats %lu\n", (unsigned long)n);
#ifdef PW_MEASURE
    printf("ticks_total %lu\ncalibration_instructions %lu calibration_ticks %lu\n", ticks, 2000000ul,
           (unsigned long)pw_cycles_calibrate(1000000u));
    printf("template_bytes %u\n", (unsigned)sizeof tp);
#endif
    fclose(out);
    return 0;
}
