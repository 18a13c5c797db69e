/* Reconnection delays for a board's Wi-Fi and MQTT links: exponential backoff with jitter, so a ward of
 * devices that lost its access point or broker at the same moment does not reconnect in lockstep.
 *
 * Delay of attempt k (from 0): d = min(cap, base * 2^k), then "equal jitter": d / 2 plus a random part in
 * [0, d / 2], from a random number the board supplies (esp_random(), a hardware RNG). A success resets k.
 * Header-only: no state beyond the caller's struct, no malloc, no time source. */
#ifndef PW_BACKOFF_H
#define PW_BACKOFF_H

#include <stdint.h>

typedef struct {
    uint32_t base_ms; /* first delay (upper bound) */
    uint32_t cap_ms;  /* longest delay (upper bound) */
    uint32_t attempt; /* failures since the last success */
} pw_backoff_t;

static inline void pw_backoff_init(pw_backoff_t *b, uint32_t base_ms, uint32_t cap_ms) {
    b->base_ms = base_ms ? base_ms : 1u;
    b->cap_ms = cap_ms < b->base_ms ? b->base_ms : cap_ms;
    b->attempt = 0;
}

static inline void pw_backoff_reset(pw_backoff_t *b) { b->attempt = 0; }

/* The delay before the next attempt, in ms; counts the attempt. */
static inline uint32_t pw_backoff_next(pw_backoff_t *b, uint32_t random) {
    uint32_t d = b->base_ms;
    for (uint32_t k = 0; k < b->attempt && d < b->cap_ms; k++) d = d > b->cap_ms / 2u ? b->cap_ms : 2u * d;
    if (d > b->cap_ms) d = b->cap_ms;
    if (b->attempt < UINT32_MAX) b->attempt++;
    return d - d / 2u + random % (d / 2u + 1u);
}

#endif
