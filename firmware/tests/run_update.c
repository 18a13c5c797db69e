/* Host test of pw_update: feeds the CHUNK messages of a file (u32 length + message, repeated) to a board
 * on fleet ARGV[3] running version ARGV[4], with the release key in ARGV[2] (32 raw bytes); the image is
 * "flashed" to ARGV[5]. Ed25519 comes from the system's libsodium (as ESP-IDF's libsodium component on the
 * ESP32). Prints "ready 1" or "refused <reason>". */
#include <stdio.h>
#include <stdlib.h>

#include "pw_update.h"
#include "pw_wire.h"

/* libsodium's prototype (the runtime library is installed; its -dev headers need not be) */
int crypto_sign_ed25519_verify_detached(const unsigned char *sig, const unsigned char *m, unsigned long long mlen,
                                        const unsigned char *pk);

static unsigned char key[32];
static FILE *flash;

static int verify(const uint8_t *head, const uint8_t *sig, void *ctx) {
    (void)ctx;
    return crypto_sign_ed25519_verify_detached(sig, head, PW_UPDATE_SIGNED_HEAD, key);
}

static int write_image(uint32_t offset, const uint8_t *data, size_t len, void *ctx) {
    (void)ctx;
    if (fseek(flash, (long)offset, SEEK_SET) != 0) return 1;
    return fwrite(data, 1, len, flash) == len ? 0 : 1;
}

static pw_update_t update; /* the caller owns it: no malloc in the core */

int main(int argc, char **argv) {
    if (argc < 6) return 2;
    FILE *in = fopen(argv[1], "rb"), *k = fopen(argv[2], "rb");
    flash = fopen(argv[5], "wb");
    if (!in || !k || !flash || fread(key, 1, 32, k) != 32) return 2;
    pw_update_init(&update, pw_fleet_id(argv[3]), (uint32_t)strtoul(argv[4], NULL, 10), verify, write_image, NULL);
    static uint8_t msg[70000];
    uint32_t len;
    while (fread(&len, 4, 1, in) == 1 && len <= sizeof msg && fread(msg, 1, len, in) == len) {
        if (pw_update_feed(&update, msg, len) == PW_ERR_DATA) break;
    }
    fclose(flash);
    if (update.ready) printf("ready 1 version %lu bytes %lu\n", (unsigned long)update.version, (unsigned long)update.written);
    else printf("refused %s\n", update.reason ? update.reason : "incomplete");
    return 0;
}
