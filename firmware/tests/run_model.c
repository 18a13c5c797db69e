/* Runs the generated model (pw_model.{h,c}) on every record of an input file and writes its outputs:
 * the same program on the host (gcc) and on a Cortex-M4 under QEMU (arm-none-eabi-gcc, semihosting file
 * I/O). Input file: per beat, each input's bytes in input order; output file: per beat, each output's
 * bytes. Usage: run_model INPUTS.bin OUTPUTS.bin; prints "beats N" and exits 0, or a reason and 1.
 * Built with PW_MEASURE (Cortex-M4 only) it also prints the stack an inference used and SysTick ticks
 * per inference with their calibration (see firmware/boards/cortex_m4/pw_cycles.h). */
#include <stdio.h>

#include "pw_model.h"

#ifdef PW_MEASURE
#include "pw_cycles.h"
#endif

int main(int argc, char **argv) {
    if (argc < 3) {
        printf("usage: run_model INPUTS.bin OUTPUTS.bin\n");
        return 1;
    }
    FILE *in = fopen(argv[1], "rb");
    FILE *out = fopen(argv[2], "wb");
    if (!in || !out) {
        printf("cannot open %s or %s\n", argv[1], argv[2]);
        return 1;
    }
    unsigned long beats = 0;
#ifdef PW_MEASURE
    unsigned long ticks_total = 0; /* < 2^32: 1,000 beats x 50,000 ticks */
    uint32_t ticks_max = 0;
    pw_systick_start();
#endif
    for (;;) {
        unsigned i;
        for (i = 0; i < PW_MODEL_INPUTS; i++) {
            size_t n = pw_model_input_size(i);
            if (fread(pw_model_input(i), 1, n, in) != n) break;
        }
        if (i < PW_MODEL_INPUTS) break; /* end of file (a partial record is ignored) */
#ifdef PW_MEASURE
        pw_stack_paint();
        uint32_t t0 = PW_SYST_CVR;
#endif
        pw_status_t st = pw_model_invoke();
#ifdef PW_MEASURE
        uint32_t ticks = pw_systick_elapsed(t0, PW_SYST_CVR);
        ticks_total += ticks;
        if (ticks > ticks_max) ticks_max = ticks;
        pw_stack_note();
#endif
        if (st != PW_OK) {
            printf("invoke failed with status %d at beat %lu\n", (int)st, beats);
            return 1;
        }
        for (i = 0; i < PW_MODEL_OUTPUTS; i++) {
            size_t n = pw_model_output_size(i);
            if (fwrite(pw_model_output(i), 1, n, out) != n) {
                printf("write failed\n");
                return 1;
            }
        }
        beats++;
    }
    fclose(in);
    fclose(out);
    printf("beats %lu\n", beats);
#ifdef PW_MEASURE
    printf("stack_bytes %lu\n", (unsigned long)pw_stack_max_used());
    printf("ticks_total %lu\nticks_max %lu\n", ticks_total, (unsigned long)ticks_max);
    printf("calibration_instructions %lu calibration_ticks %lu\n", 2000000ul,
           (unsigned long)pw_cycles_calibrate(1000000u));
#endif
    return 0;
}
