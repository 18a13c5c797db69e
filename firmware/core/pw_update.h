/* Firmware (= model) updates for boards whose model is compiled in: a signed image arrives in CHUNK
 * messages, streams to the caller's flash writer while its SHA-256 is computed, and is accepted only if
 * the digest matches the signed head and the signature verifies. Portable: the board supplies flash
 * writes and Ed25519 verification (libsodium on ESP-IDF) as callbacks.
 *
 * Payload (the CHUNK fragments in index order; training/codegen/release.py builds it):
 *   signed head, 48 bytes: "PWFW" | u32 fleet id | u32 version | u32 image length | SHA-256 of the image
 *   Ed25519 signature of the signed head, 64 bytes
 *   the image
 * All integers little-endian. The fleet must be the board's, the version newer than the running one. */
#ifndef PW_UPDATE_H
#define PW_UPDATE_H

#include <stddef.h>
#include <stdint.h>

#include "pw_sha256.h"
#include "pw_status.h"

#define PW_UPDATE_SIGNED_HEAD 48u
#define PW_UPDATE_HEAD (PW_UPDATE_SIGNED_HEAD + 64u)

/* 0 if the Ed25519 signature of the 48-byte signed head verifies with the release key. */
typedef int (*pw_update_verify_fn)(const uint8_t *signed_head, const uint8_t *signature, void *ctx);
/* 0 if `len` image bytes were written after the previous ones (begin a new image when offset is 0). */
typedef int (*pw_update_write_fn)(uint32_t offset, const uint8_t *data, size_t len, void *ctx);

typedef struct {
    uint32_t fleet_id, running_version;
    pw_update_verify_fn verify;
    pw_update_write_fn write;
    void *ctx;
    /* progress of the release being received */
    int active;
    uint32_t message_id, image_len, written, version;
    uint16_t next_index;
    uint8_t head[PW_UPDATE_HEAD];
    uint32_t head_len;
    pw_sha256_t sha;
    /* outcome */
    int ready;              /* 1: a verified image is written; switch to it */
    const char *reason;     /* why the last release was refused (static string), or NULL */
} pw_update_t;

void pw_update_init(pw_update_t *u, uint32_t fleet_id, uint32_t running_version, pw_update_verify_fn verify,
                    pw_update_write_fn write, void *ctx);

/* One received wire message (a CHUNK). PW_OK while receiving or when done (u->ready); PW_ERR_DATA when the
 * release is refused (u->reason says why; the next release starts afresh); PW_ERR_ARG for a message that is
 * not a valid CHUNK (ignored). */
pw_status_t pw_update_feed(pw_update_t *u, const uint8_t *msg, size_t len);

#endif
