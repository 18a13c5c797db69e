/* The inference path alone, for flash/RAM accounting with arm-none-eabi-size: one inference on the inputs
 * as they are (zeros) and the class as exit status; no stdio. Built with PW_SIZE_BASELINE the model is
 * left out, so the difference of the two ELFs is what the model and its kernels cost. */
#include <stdint.h>

#ifndef PW_SIZE_BASELINE
#include "pw_kernels.h"
#include "pw_model.h"
#endif

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
#ifdef PW_SIZE_BASELINE
    return 0;
#else
    if (pw_model_invoke() != PW_OK) return 1;
    return pw_argmax_s8(pw_model_output(0), (uint16_t)pw_model_output_size(0)) < 255 ? 0 : 1;
#endif
}
