/* pw_backoff.h on the host: every delay within [d/2, d] of its doubling schedule, capped, reset by a
 * success; exits 1 with the failing case printed. */
#include <stdio.h>

#include "pw_backoff.h"

static uint32_t xorshift(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

int main(void) {
    pw_backoff_t b;
    uint32_t seed = 12345u;
    pw_backoff_init(&b, 1000u, 60000u);
    for (int round = 0; round < 3; round++) {
        uint32_t expect = 1000u;
        for (int k = 0; k < 40; k++) {
            const uint32_t d = pw_backoff_next(&b, xorshift(&seed));
            if (d < expect - expect / 2u || d > expect) {
                printf("attempt %d: delay %lu outside [%lu, %lu]\n", k, (unsigned long)d,
                       (unsigned long)(expect - expect / 2u), (unsigned long)expect);
                return 1;
            }
            expect = expect * 2u > 60000u ? 60000u : expect * 2u;
        }
        pw_backoff_reset(&b);
    }
    pw_backoff_init(&b, 0u, 0u); /* degenerate settings still give a delay, never a division by zero */
    if (pw_backoff_next(&b, 7u) > 1u) return 1;
    pw_backoff_init(&b, 500u, 500u);
    for (int k = 0; k < 5; k++) {
        const uint32_t d = pw_backoff_next(&b, 0xFFFFFFFFu);
        if (d < 250u || d > 500u) return 1;
    }
    printf("backoff ok\n");
    return 0;
}
