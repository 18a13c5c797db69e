/* pulsewire on an ESP32 (ESP-IDF 5): the ECG from the ADC through the C front-end and R-peak detector into
 * the generated int8 model; ALERT and STATUS messages over MQTT (esp-mqtt, QoS 1, retained status with an
 * "offline" last will); signed firmware updates (the model is compiled in) that are kept only after a
 * health check; Wi-Fi and MQTT reconnection with backoff; the hardware-in-the-loop protocol on the
 * USB-serial console (docs/hil.md). Not compiled on the project's build machines (firmware/README.md).
 *
 * Signal: an analog ECG front-end (e.g. an AD8232) on ADC1 channel PW_ADC_CHANNEL (GPIO34), converted
 * continuously at PW_ADC_OVERSAMPLE x the model's rate (36 kHz for 360 Hz) and averaged in blocks of
 * PW_ADC_OVERSAMPLE: one sample at the model's rate, from the ADC's own clock, no timer interrupt. The
 * samples go through pw_hil_push (core/pw_hil.h: pw_frontend_push_adc, the detector, the model), the same
 * path as the HIL batches; the front-end's gain is set when the firmware is generated
 * (`pulsewire firmware generate --frontend --adc-gain UNITS_PER_MV`).
 *
 * HIL: the first byte on the console switches the board to HIL mode: the stream restarts, ADC samples are
 * ignored (counted), the host's samples are classified and answered on the console, and no alert is
 * published. PW_HIL_IDLE_S seconds without a byte switch it back to the ADC. ESP-IDF log lines on the
 * console carry no checksum: the host ignores them.
 *
 * Firmware release (topic pw/<fleet>/firmware, training/codegen/release.py): CHUNK messages in index order
 * carrying a signed head (fleet, version, length, SHA-256), its Ed25519 signature and the image
 * (core/pw_update.h), verified with the fleet's release key compiled in from pw_release_key.h
 * (`pulsewire firmware keyheader`). The boot partition switches only when the streamed image's SHA-256
 * matches. The new image then runs in the bootloader's "pending verify" state
 * (CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE, sdkconfig.defaults) and marks itself valid only when its self-test
 * inference (the stored beat of pw_selftest_beat.h gives the stored logits) passed and it reached the
 * broker; a failed self-test, or no broker within PW_HEALTH_TIMEOUT_S, rolls back to the previous image. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "driver/uart.h"
#include "esp_adc/adc_continuous.h"
#include "esp_event.h"
#include "esp_log.h"
#include "esp_netif.h"
#include "esp_ota_ops.h"
#include "esp_random.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "esp_wifi.h"
#include "freertos/FreeRTOS.h"
#include "freertos/queue.h"
#include "freertos/task.h"
#include "mqtt_client.h"
#include "nvs_flash.h"
#include "sodium.h"
#if __has_include("driver/uart_vfs.h")
#include "driver/uart_vfs.h" /* ESP-IDF >= 5.3 */
#define PW_CONSOLE_USE_DRIVER(n) uart_vfs_dev_use_driver(n)
#else
#include "esp_vfs_dev.h"
#define PW_CONSOLE_USE_DRIVER(n) esp_vfs_dev_uart_use_driver(n)
#endif

#if __has_include("pw_release_key.h")
#include "pw_release_key.h"
#else
#error "pw_release_key.h is missing: run `pulsewire firmware keyheader --pubkey FLEET/keys/aggregator.pub --out firmware/boards/esp32/include/pw_release_key.h` (firmware/README.md)"
#endif

#include "pw_backoff.h"
#include "pw_hil.h"
#include "pw_model.h"
#include "pw_update.h"
#include "pw_wire.h"

#define PW_CONSOLE UART_NUM_0        /* the USB-serial bridge of a DevKit */
#ifndef PW_ADC_CHANNEL
#define PW_ADC_CHANNEL ADC_CHANNEL_6 /* GPIO34 on ADC1 */
#endif
#define PW_ADC_OVERSAMPLE 100u       /* conversions averaged per sample */
#define PW_ADC_FRAME 256u            /* bytes per DMA frame: 128 conversions of 2 bytes on the ESP32 */
#define PW_RUN_LENGTH 3              /* consecutive V (or S) beats that make an alert, as edge_runtime/alerts.py */
#define PW_HIL_IDLE_S 30
#define PW_HEALTH_TIMEOUT_S 120
#ifndef PW_FIRMWARE_VERSION
#define PW_FIRMWARE_VERSION 1 /* releases must be newer */
#endif

static const char *TAG = "pulsewire";
static const char *CLASSES = "NSVFQ";

static esp_mqtt_client_handle_t pw_mqtt;
static uint32_t pw_boot_id, pw_alert_seq, pw_beats, pw_adc_ignored;
static bool pw_selftest_ok, pw_pending_verify, pw_mqtt_started;
static pw_hil_t pw_hil; /* the stream: ADC samples in live mode, the host's in HIL mode */
static bool pw_hil_mode;
static int64_t pw_hil_last_us;

/* ---- MQTT: alerts and status ---- */

static void pw_topic(char *out, size_t cap, const char *what) { snprintf(out, cap, "pw/%s/%s", PW_FLEET, what); }

static void pw_publish_status(const char *state) {
    static uint8_t msg[256];
    pw_status_counter_t counters[4] = {{"beats", pw_beats}, {"uptime_s", (uint32_t)(esp_timer_get_time() / 1000000)},
                                       {"selftest_ok", pw_selftest_ok}, {"late_peaks", pw_hil.fe.late_peaks}};
    size_t n = pw_status_message(msg, sizeof msg, PW_FLEET, PW_DEVICE_ID, state, counters, 4);
    char topic[96];
    snprintf(topic, sizeof topic, "pw/%s/device/%s/status", PW_FLEET, PW_DEVICE);
    if (n) esp_mqtt_client_publish(pw_mqtt, topic, (const char *)msg, (int)n, 1, 1);
}

static void pw_publish_alert(char cls, uint32_t beat_index, uint32_t beats, uint16_t permille) {
    static uint8_t msg[512];
    char id[48], topic[96];
    snprintf(id, sizeof id, "%s-%08lx-%lu", PW_DEVICE, (unsigned long)pw_boot_id, (unsigned long)++pw_alert_seq);
    pw_alert_t alert = {id, PW_DEVICE, "anon-" PW_DEVICE, cls == 'V' ? "ventricular_run" : "supraventricular_run",
                        "1970-01-01T00:00:00.000+00:00" /* no RTC: the gateway stamps arrival time */,
                        pw_model_sha256, cls, beat_index, beats, permille, 0, NULL};
    size_t n = pw_alert_message(msg, sizeof msg, PW_FLEET, PW_DEVICE_ID, &alert);
    snprintf(topic, sizeof topic, "pw/%s/alert/%s", PW_FLEET, PW_DEVICE);
    if (n) esp_mqtt_client_publish(pw_mqtt, topic, (const char *)msg, (int)n, 1, 0);
}

/* Every classified beat of the live stream: runs of PW_RUN_LENGTH V or S beats make an alert. */
static void pw_on_beat(const pw_hil_beat_t *beat, void *ctx) {
    (void)ctx;
    static char run_cls;
    static uint32_t run_len, run_permille;
    if (pw_hil_mode || !pw_selftest_ok) return; /* test beats and an unverified model raise no alert */
    const char cls = beat->cls < 5 ? CLASSES[beat->cls] : '?';
    const uint16_t permille = (uint16_t)(((int32_t)beat->logits[beat->cls] + 128) * 1000 / 256); /* scale 1/256, zp -128 */
    pw_beats++;
    if (cls == 'V' || cls == 'S') {
        run_len = cls == run_cls ? run_len + 1 : 1;
        run_permille = cls == run_cls ? run_permille + permille : permille;
        run_cls = cls;
        if (run_len == PW_RUN_LENGTH) pw_publish_alert(cls, pw_beats - PW_RUN_LENGTH, run_len, (uint16_t)(run_permille / run_len));
    } else {
        run_cls = 0;
        run_len = 0;
    }
    if (pw_beats % 60 == 0) pw_publish_status("online");
}

/* ---- firmware (= model) update: the C core's pw_update with ESP-IDF flash and libsodium ---- */

static pw_update_t pw_up;
static esp_ota_handle_t pw_ota;
static const esp_partition_t *pw_ota_part;

static bool pw_key_present(void) {
    for (unsigned i = 0; i < sizeof pw_release_key; i++) {
        if (pw_release_key[i]) return true;
    }
    return false;
}

static int pw_verify(const uint8_t *signed_head, const uint8_t *signature, void *ctx) {
    (void)ctx;
    if (!pw_key_present()) return 1; /* never trust a blank key */
    return crypto_sign_verify_detached(signature, signed_head, PW_UPDATE_SIGNED_HEAD, pw_release_key);
}

static int pw_flash_write(uint32_t offset, const uint8_t *data, size_t len, void *ctx) {
    (void)ctx;
    if (offset == 0) { /* a new image: (re)start the idle OTA partition */
        if (pw_ota_part) esp_ota_abort(pw_ota);
        pw_ota_part = esp_ota_get_next_update_partition(NULL);
        if (!pw_ota_part || esp_ota_begin(pw_ota_part, OTA_WITH_SEQUENTIAL_WRITES, &pw_ota) != ESP_OK) return 1;
    }
    return esp_ota_write(pw_ota, data, len) == ESP_OK ? 0 : 1;
}

static void pw_on_chunk(const uint8_t *data, size_t len) {
    if (pw_update_feed(&pw_up, data, len) == PW_ERR_DATA) {
        ESP_LOGW(TAG, "firmware release refused: %s", pw_up.reason);
        if (pw_ota_part) esp_ota_abort(pw_ota);
        pw_ota_part = NULL;
        return;
    }
    if (pw_up.ready) {
        if (esp_ota_end(pw_ota) != ESP_OK || esp_ota_set_boot_partition(pw_ota_part) != ESP_OK) {
            ESP_LOGW(TAG, "verified image not accepted by the bootloader");
            return;
        }
        ESP_LOGI(TAG, "signed firmware %lu installed, restarting into its health check", (unsigned long)pw_up.version);
        pw_publish_status("updating");
        esp_restart();
    }
}

/* ---- health check of a new image ---- */

static esp_timer_handle_t pw_health_timer;

static void pw_health_timeout(void *arg) {
    (void)arg;
    if (!pw_pending_verify) return;
    ESP_LOGE(TAG, "new image did not reach the broker within %d s: rolling back", PW_HEALTH_TIMEOUT_S);
    esp_ota_mark_app_invalid_rollback_and_reboot();
}

/* At boot: the self-test inference; an image on trial that fails it goes back at once. */
static void pw_health_at_boot(void) {
    const esp_partition_t *running = esp_ota_get_running_partition();
    esp_ota_img_states_t state;
    pw_pending_verify = esp_ota_get_state_partition(running, &state) == ESP_OK && state == ESP_OTA_IMG_PENDING_VERIFY;
    pw_selftest_ok = pw_hil_selftest() == 1;
    ESP_LOGI(TAG, "self-test inference %s%s", pw_selftest_ok ? "passed" : "FAILED",
             pw_pending_verify ? " (new image on trial)" : "");
    if (pw_pending_verify && !pw_selftest_ok) esp_ota_mark_app_invalid_rollback_and_reboot();
    if (pw_pending_verify) {
        const esp_timer_create_args_t args = {.callback = pw_health_timeout, .name = "pw_health"};
        ESP_ERROR_CHECK(esp_timer_create(&args, &pw_health_timer));
        ESP_ERROR_CHECK(esp_timer_start_once(pw_health_timer, (uint64_t)PW_HEALTH_TIMEOUT_S * 1000000u));
    }
}

/* Reached the broker with a passing self-test: the image is kept. */
static void pw_health_passed(void) {
    if (!pw_pending_verify || !pw_selftest_ok) return;
    if (esp_ota_mark_app_valid_cancel_rollback() == ESP_OK) {
        pw_pending_verify = false;
        esp_timer_stop(pw_health_timer);
        ESP_LOGI(TAG, "new image healthy: marked valid");
    }
}

/* ---- Wi-Fi and MQTT, each reconnected with exponential backoff and jitter (core/pw_backoff.h) ---- */

static esp_timer_handle_t pw_wifi_timer, pw_mqtt_timer;
static pw_backoff_t pw_wifi_backoff, pw_mqtt_backoff;

static void pw_wifi_retry(void *arg) {
    (void)arg;
    esp_wifi_connect();
}

static void pw_mqtt_retry(void *arg) {
    (void)arg;
    esp_mqtt_client_reconnect(pw_mqtt);
}

static void pw_retry_later(esp_timer_handle_t timer, pw_backoff_t *b, const char *what) {
    const uint32_t ms = pw_backoff_next(b, esp_random());
    ESP_LOGW(TAG, "%s down: attempt %lu in %lu ms", what, (unsigned long)b->attempt, (unsigned long)ms);
    esp_timer_stop(timer); /* not running is fine */
    esp_timer_start_once(timer, (uint64_t)ms * 1000u);
}

static void pw_mqtt_event(void *arg, esp_event_base_t base, int32_t id, void *data) {
    (void)arg;
    (void)base;
    esp_mqtt_event_handle_t ev = data;
    char topic[96];
    if (id == MQTT_EVENT_CONNECTED) { /* subscribe on every connect: reconnects restore it */
        pw_backoff_reset(&pw_mqtt_backoff);
        pw_topic(topic, sizeof topic, "firmware");
        esp_mqtt_client_subscribe(pw_mqtt, topic, 1);
        pw_publish_status(pw_selftest_ok ? "online" : "selftest_failed");
        pw_health_passed();
    } else if (id == MQTT_EVENT_DISCONNECTED) {
        pw_retry_later(pw_mqtt_timer, &pw_mqtt_backoff, "MQTT");
    } else if (id == MQTT_EVENT_DATA && ev->current_data_offset == 0 && ev->data_len == ev->total_data_len) {
        pw_on_chunk((const uint8_t *)ev->data, (size_t)ev->data_len);
    }
}

static void pw_net_event(void *arg, esp_event_base_t base, int32_t id, void *data) {
    (void)arg;
    (void)data;
    if (base == WIFI_EVENT && id == WIFI_EVENT_STA_START) {
        esp_wifi_connect();
    } else if (base == WIFI_EVENT && id == WIFI_EVENT_STA_DISCONNECTED) {
        pw_retry_later(pw_wifi_timer, &pw_wifi_backoff, "Wi-Fi");
    } else if (base == IP_EVENT && id == IP_EVENT_STA_GOT_IP) {
        pw_backoff_reset(&pw_wifi_backoff);
        if (!pw_mqtt_started) { /* the first address: start MQTT; later ones: MQTT's own retry takes over */
            pw_mqtt_started = true;
            esp_mqtt_client_start(pw_mqtt);
        } else {
            pw_backoff_reset(&pw_mqtt_backoff);
            pw_retry_later(pw_mqtt_timer, &pw_mqtt_backoff, "MQTT (network back)");
        }
    }
}

static void pw_connect(void) {
    const esp_timer_create_args_t wifi_timer = {.callback = pw_wifi_retry, .name = "pw_wifi"};
    const esp_timer_create_args_t mqtt_timer = {.callback = pw_mqtt_retry, .name = "pw_mqtt"};
    ESP_ERROR_CHECK(esp_timer_create(&wifi_timer, &pw_wifi_timer));
    ESP_ERROR_CHECK(esp_timer_create(&mqtt_timer, &pw_mqtt_timer));
    pw_backoff_init(&pw_wifi_backoff, 1000u, 60000u);
    pw_backoff_init(&pw_mqtt_backoff, 1000u, 60000u);

    static uint8_t will[64];
    static char will_topic[96];
    size_t will_len = pw_status_message(will, sizeof will, PW_FLEET, PW_DEVICE_ID, "offline", NULL, 0);
    snprintf(will_topic, sizeof will_topic, "pw/%s/device/%s/status", PW_FLEET, PW_DEVICE);
    esp_mqtt_client_config_t cfg = {
        .broker.address.uri = PW_BROKER_URI,
        .credentials.client_id = PW_DEVICE,
        .session.disable_clean_session = true,
        .session.last_will = {.topic = will_topic, .msg = (const char *)will, .msg_len = (int)will_len, .qos = 1,
                              .retain = 1},
        .network.disable_auto_reconnect = true, /* pw_mqtt_retry reconnects, with backoff */
    };
    pw_mqtt = esp_mqtt_client_init(&cfg);
    esp_mqtt_client_register_event(pw_mqtt, ESP_EVENT_ANY_ID, pw_mqtt_event, NULL);

    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(esp_event_loop_create_default());
    esp_netif_create_default_wifi_sta();
    wifi_init_config_t wcfg = WIFI_INIT_CONFIG_DEFAULT();
    ESP_ERROR_CHECK(esp_wifi_init(&wcfg));
    ESP_ERROR_CHECK(esp_event_handler_register(WIFI_EVENT, ESP_EVENT_ANY_ID, pw_net_event, NULL));
    ESP_ERROR_CHECK(esp_event_handler_register(IP_EVENT, IP_EVENT_STA_GOT_IP, pw_net_event, NULL));
    wifi_config_t sta = {0};
    strncpy((char *)sta.sta.ssid, PW_WIFI_SSID, sizeof sta.sta.ssid);
    strncpy((char *)sta.sta.password, PW_WIFI_PASS, sizeof sta.sta.password);
    ESP_ERROR_CHECK(esp_wifi_set_mode(WIFI_MODE_STA));
    ESP_ERROR_CHECK(esp_wifi_set_config(WIFI_IF_STA, &sta));
    ESP_ERROR_CHECK(esp_wifi_start()); /* WIFI_EVENT_STA_START connects */
}

/* ---- the signal: ADC samples and the HIL console, one task (the model's arena is not reentrant) ---- */

static adc_continuous_handle_t pw_adc;
static QueueHandle_t pw_console_events;

static void pw_console_write(const char *bytes, size_t n, void *ctx) {
    (void)ctx;
    uart_write_bytes(PW_CONSOLE, bytes, n);
}

static void pw_adc_start(void) {
    const adc_continuous_handle_cfg_t hcfg = {.max_store_buf_size = 4 * PW_ADC_FRAME, .conv_frame_size = PW_ADC_FRAME};
    ESP_ERROR_CHECK(adc_continuous_new_handle(&hcfg, &pw_adc));
    adc_digi_pattern_config_t pattern = {.atten = ADC_ATTEN_DB_11, .channel = PW_ADC_CHANNEL, .unit = ADC_UNIT_1,
                                         .bit_width = SOC_ADC_DIGI_MAX_BITWIDTH};
    const adc_continuous_config_t cfg = {.sample_freq_hz = PW_FE_FS_HZ * PW_ADC_OVERSAMPLE, .conv_mode = ADC_CONV_SINGLE_UNIT_1,
                                         .format = ADC_DIGI_OUTPUT_FORMAT_TYPE1, .pattern_num = 1, .adc_pattern = &pattern};
    ESP_ERROR_CHECK(adc_continuous_config(pw_adc, &cfg));
    ESP_ERROR_CHECK(adc_continuous_start(pw_adc));
}

static void pw_on_adc(const uint8_t *frame, uint32_t n) {
    static uint32_t sum, count;
    for (uint32_t i = 0; i + SOC_ADC_DIGI_RESULT_BYTES <= n; i += SOC_ADC_DIGI_RESULT_BYTES) {
        const adc_digi_output_data_t *d = (const adc_digi_output_data_t *)&frame[i];
        if (d->type1.channel != PW_ADC_CHANNEL) continue;
        sum += d->type1.data;
        if (++count < PW_ADC_OVERSAMPLE) continue;
        const int32_t sample = (int32_t)((sum + PW_ADC_OVERSAMPLE / 2u) / PW_ADC_OVERSAMPLE);
        sum = count = 0;
        if (pw_hil_mode) {
            pw_adc_ignored++;
        } else {
            pw_hil_push(&pw_hil, sample);
        }
    }
}

static void pw_console_poll(void) {
    uart_event_t ev;
    while (xQueueReceive(pw_console_events, &ev, 0) == pdTRUE) {
        if (ev.type == UART_FIFO_OVF || ev.type == UART_BUFFER_FULL) { /* bytes lost: the host sees the gap */
            pw_hil.count.overruns++;
            uart_flush_input(PW_CONSOLE);
            xQueueReset(pw_console_events);
        }
    }
    char rx[256];
    const int got = uart_read_bytes(PW_CONSOLE, rx, sizeof rx, 0);
    const int64_t now = esp_timer_get_time();
    if (got > 0) {
        if (!pw_hil_mode) { /* a host is talking: test mode, from a fresh stream */
            pw_hil_mode = true;
            pw_hil_reset(&pw_hil);
            esp_log_level_set("*", ESP_LOG_WARN);
        }
        pw_hil_last_us = now;
        pw_hil_feed(&pw_hil, rx, (size_t)got);
    } else if (pw_hil_mode && now - pw_hil_last_us > (int64_t)PW_HIL_IDLE_S * 1000000) {
        pw_hil_mode = false; /* back to the ADC, from a fresh stream */
        pw_hil_reset(&pw_hil);
        esp_log_level_set("*", ESP_LOG_INFO);
        ESP_LOGI(TAG, "HIL idle for %d s: classifying the ADC again (%lu ADC samples ignored)", PW_HIL_IDLE_S,
                 (unsigned long)pw_adc_ignored);
    }
}

static void pw_signal_task(void *arg) {
    (void)arg;
    static uint8_t frame[PW_ADC_FRAME];
    for (;;) {
        uint32_t n = 0;
        if (adc_continuous_read(pw_adc, frame, sizeof frame, &n, 10) == ESP_OK) pw_on_adc(frame, n);
        pw_console_poll();
    }
}

void app_main(void) {
    esp_err_t err = nvs_flash_init();
    if (err == ESP_ERR_NVS_NO_FREE_PAGES || err == ESP_ERR_NVS_NEW_VERSION_FOUND) {
        ESP_ERROR_CHECK(nvs_flash_erase());
        ESP_ERROR_CHECK(nvs_flash_init());
    }
    pw_health_at_boot();
    if (sodium_init() < 0 || !pw_key_present()) ESP_LOGE(TAG, "no usable release key: updates will be refused");
    pw_update_init(&pw_up, pw_fleet_id(PW_FLEET), PW_FIRMWARE_VERSION, pw_verify, pw_flash_write, NULL);
    pw_boot_id = esp_random();
    /* the console: the UART driver for both directions, so HIL lines and log lines never interleave mid-line */
    ESP_ERROR_CHECK(uart_driver_install(PW_CONSOLE, 4096, 4096, 16, &pw_console_events, 0));
    PW_CONSOLE_USE_DRIVER(PW_CONSOLE);
    pw_hil_init(&pw_hil, pw_console_write, pw_on_beat, NULL);
    ESP_LOGI(TAG, "model %.12s, arena %u bytes, release key %.12s", pw_model_sha256, (unsigned)PW_MODEL_ARENA_BYTES,
             PW_RELEASE_KEY_SHA256);
    pw_adc_start();
    pw_connect();
    xTaskCreate(pw_signal_task, "pw_signal", 8192, NULL, 5, NULL);
}
