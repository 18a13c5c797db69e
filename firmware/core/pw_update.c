/* Signed firmware updates from CHUNK messages: see pw_update.h. */
#include "pw_update.h"

#include <string.h>

#include "pw_wire.h"

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

void pw_update_init(pw_update_t *u, uint32_t fleet_id, uint32_t running_version, pw_update_verify_fn verify,
                    pw_update_write_fn write, void *ctx) {
    memset(u, 0, sizeof *u);
    u->fleet_id = fleet_id;
    u->running_version = running_version;
    u->verify = verify;
    u->write = write;
    u->ctx = ctx;
}

static pw_status_t refuse(pw_update_t *u, const char *why) {
    u->active = 0;
    u->reason = why;
    return PW_ERR_DATA;
}

/* the head is complete: check what it announces before any image byte is written */
static pw_status_t check_head(pw_update_t *u) {
    if (memcmp(u->head, "PWFW", 4) != 0) return refuse(u, "bad_magic");
    if (le32(u->head + 4) != u->fleet_id) return refuse(u, "wrong_fleet");
    u->version = le32(u->head + 8);
    if (u->version <= u->running_version) return refuse(u, "not_newer");
    u->image_len = le32(u->head + 12);
    if (u->image_len == 0) return refuse(u, "empty");
    if (u->verify(u->head, u->head + PW_UPDATE_SIGNED_HEAD, u->ctx) != 0) return refuse(u, "bad_signature");
    return PW_OK;
}

pw_status_t pw_update_feed(pw_update_t *u, const uint8_t *msg, size_t len) {
    pw_header_t h;
    uint32_t id;
    uint16_t index, count;
    const uint8_t *frag;
    size_t frag_len;
    if (!u || pw_unframe(msg, len, &h) != 0 || pw_chunk_fields(&h, &id, &index, &count, &frag, &frag_len) != 0)
        return PW_ERR_ARG;
    if (h.fleet_id != u->fleet_id) return PW_ERR_ARG; /* another fleet's traffic: not ours to judge */
    if (index == 0) { /* a release starts (or restarts): forget any partial one */
        u->active = 1;
        u->ready = 0;
        u->reason = NULL;
        u->message_id = id;
        u->head_len = 0;
        u->written = 0;
        u->image_len = 0;
        pw_sha256_init(&u->sha);
    } else if (!u->active || id != u->message_id) {
        return PW_ERR_ARG; /* the tail of a release we are not receiving */
    } else if (index != u->next_index) {
        return refuse(u, "out_of_order");
    }
    u->next_index = (uint16_t)(index + 1);
    while (frag_len && u->head_len < PW_UPDATE_HEAD) {
        u->head[u->head_len++] = *frag++;
        frag_len--;
        if (u->head_len == PW_UPDATE_HEAD && check_head(u) != PW_OK) return PW_ERR_DATA;
    }
    if (frag_len) {
        if (u->written + frag_len > u->image_len) return refuse(u, "too_long");
        pw_sha256_update(&u->sha, frag, frag_len);
        if (u->write(u->written, frag, frag_len, u->ctx) != 0) return refuse(u, "write_failed");
        u->written += (uint32_t)frag_len;
    }
    if (index + 1 == count) {
        uint8_t digest[32];
        if (u->head_len < PW_UPDATE_HEAD || u->written != u->image_len) return refuse(u, "too_short");
        pw_sha256_final(&u->sha, digest);
        if (memcmp(digest, u->head + 16, 32) != 0) return refuse(u, "digest_mismatch");
        u->active = 0;
        u->ready = 1;
    }
    return PW_OK;
}
