/* The HIL protocol (core/pw_hil.c) on the host: bytes from stdin, replies to stdout, in chunks of the
 * size given as argv[1] (default 1: byte by byte, as a polled UART delivers them). With the generated model,
 * pw_frontend_config.h and pw_selftest_beat.h on the include path; tests/test_hil.py drives it. */
#include <stdio.h>
#include <stdlib.h>

#include "pw_hil.h"

static pw_hil_t hil; /* static: the caller owns it */

static void write_stdout(const char *bytes, size_t n, void *ctx) {
    (void)ctx;
    fwrite(bytes, 1, n, stdout);
}

int main(int argc, char **argv) {
    const long chunk = argc > 1 ? strtol(argv[1], 0, 10) : 1;
    char buf[4096];
    if (chunk < 1 || chunk > (long)sizeof buf) return 1;
    pw_hil_init(&hil, write_stdout, 0, 0);
    size_t n;
    while ((n = fread(buf, 1, (size_t)chunk, stdin)) > 0) pw_hil_feed(&hil, buf, n);
    return 0;
}
