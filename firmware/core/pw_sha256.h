/* SHA-256 (FIPS 180-4), streaming, no malloc: for checking firmware images as they arrive. */
#ifndef PW_SHA256_H
#define PW_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t bytes;
    uint8_t block[64];
    uint32_t used;
} pw_sha256_t;

void pw_sha256_init(pw_sha256_t *s);
void pw_sha256_update(pw_sha256_t *s, const uint8_t *data, size_t len);
void pw_sha256_final(pw_sha256_t *s, uint8_t digest[32]);

#endif
