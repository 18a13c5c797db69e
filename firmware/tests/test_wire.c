/* Host test: the C encoder against the Python golden vectors (path of the golden folder in argv[1]). */
#include <stdio.h>
#include <string.h>

#include "../core/pw_wire.h"

static int failures = 0;

static size_t read_file(const char *dir, const char *name, uint8_t *buf, size_t cap) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) { printf("FAIL cannot open %s\n", path); failures++; return 0; }
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void expect_same(const char *name, const uint8_t *got, size_t got_len, const uint8_t *want, size_t want_len) {
    if (got_len != want_len || memcmp(got, want, got_len) != 0) {
        printf("FAIL %s: %zu bytes, golden %zu\n", name, got_len, want_len);
        failures++;
    } else {
        printf("ok   %s (%zu bytes)\n", name, got_len);
    }
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "tests/golden/wire";
    static uint8_t want[4096], got[4096];
    pw_alert_t alert = {"p101-1a2b3c4d-7", "p101", "anon-17", "ventricular_run", "2026-11-23T14:00:05.250+00:00",
                        "fedavg-seed0-9f8e7d", 'V', 123456, 3, 912, 143, NULL};
    size_t n = read_file(dir, "alert_ventricular_run.bin", want, sizeof want);
    expect_same("alert_ventricular_run", got, pw_alert_message(got, sizeof got, "ward3", 101, &alert), want, n);

    pw_counts_t counts = {66, 1, 4, 0, 0};
    pw_alert_t summary = alert;
    summary.alert_id = "p101-1a2b3c4d-8"; summary.kind = "summary"; summary.beats = 71; summary.cls = 'N';
    summary.confidence_permille = 955; summary.heart_rate_bpm = 72; summary.counts = &counts;
    n = read_file(dir, "alert_summary.bin", want, sizeof want);
    expect_same("alert_summary", got, pw_alert_message(got, sizeof got, "ward3", 101, &summary), want, n);

    /* a status body is plain JSON as well: frame the golden body and compare the whole message */
    n = read_file(dir, "status_online.bin", want, sizeof want);
    expect_same("status_online", got,
                pw_frame(got, sizeof got, PW_STATUS, pw_fleet_id("ward3"), 0, 101, 0, 0, want + PW_HEADER_BYTES,
                         (uint32_t)(n - PW_HEADER_BYTES)), want, n);

    /* the C status encoder writes the golden status message itself */
    const pw_status_counter_t counters[2] = {{"spool_depth", 0}, {"beats", 1234}};
    expect_same("status_online_encoded", got,
                pw_status_message(got, sizeof got, "ward3", 101, "online", counters, 2), want, n);
    const pw_status_counter_t dup[2] = {{"beats", 1}, {"beats", 2}};
    if (pw_status_json((char *)got, sizeof got, "online", dup, 2) != 0) { printf("FAIL repeated key accepted\n"); failures++; }
    if (pw_status_json((char *)got, 20, "online", counters, 2) != 0) { printf("FAIL small status buffer\n"); failures++; }

    /* received messages: the golden CHUNKs decode, a flipped byte is caught by the CRC */
    int chunks_ok = 1;
    for (int k = 0; k < 7; k++) {
        char name[64];
        snprintf(name, sizeof name, "chunk_update_int8_%d.bin", k);
        n = read_file(dir, name, want, sizeof want);
        pw_header_t h;
        uint32_t id;
        uint16_t index, count;
        const uint8_t *frag;
        size_t frag_len;
        if (pw_unframe(want, n, &h) != 0 || h.kind != PW_CHUNK ||
            pw_chunk_fields(&h, &id, &index, &count, &frag, &frag_len) != 0 || index != k || count != 7) {
            chunks_ok = 0;
        }
        want[n - 1] ^= 0x40; /* a body byte */
        if (pw_unframe(want, n, &h) != -4) chunks_ok = 0;
    }
    printf("%s chunks decode, corruption caught\n", chunks_ok ? "ok  " : "FAIL");
    if (!chunks_ok) failures++;

    /* a buffer too small is refused, not overrun */
    if (pw_alert_message(got, 40, "ward3", 101, &alert) != 0) { printf("FAIL small buffer accepted\n"); failures++; }
    pw_alert_t bad = alert;
    bad.patient = "Jane Doe"; /* needs escaping: refused */
    if (pw_alert_json((char *)got, sizeof got, &bad) != 0) { printf("FAIL unescaped name accepted\n"); failures++; }
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
