/* Runs the generated model (pw_model.{h,c}) on every record of an input file and writes its outputs:
 * the same program on the host (gcc) and on a Cortex-M4 under QEMU (arm-none-eabi-gcc, semihosting file
 * I/O). Input file: per beat, each input's bytes in input order; output file: per beat, each output's
 * bytes. Usage: run_model INPUTS.bin OUTPUTS.bin; prints "beats N" and exits 0, or a reason and 1. */
#include <stdio.h>

#include "pw_model.h"

#ifdef PW_STACK_PAINT
#include "pw_stack_paint.h"
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
    for (;;) {
        unsigned i;
        for (i = 0; i < PW_MODEL_INPUTS; i++) {
            size_t n = pw_model_input_size(i);
            if (fread(pw_model_input(i), 1, n, in) != n) break;
        }
        if (i < PW_MODEL_INPUTS) break; /* end of file (a partial record is ignored) */
#ifdef PW_STACK_PAINT
        pw_stack_paint();
#endif
        pw_status_t st = pw_model_invoke();
#ifdef PW_STACK_PAINT
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
#ifdef PW_STACK_PAINT
    printf("stack_bytes %lu\n", (unsigned long)pw_stack_max_used());
#endif
    return 0;
}
