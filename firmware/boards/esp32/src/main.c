/* pulsewire on an ESP32 (ESP-IDF 5): classifies beats with the generated int8 model, publishes ALERT and
 * STATUS messages over MQTT (esp-mqtt, QoS 1, retained status with an "offline" last will), and installs a
 * new firmware (the model is compiled in) received in CHUNK messages, only if its Ed25519 signature
 * verifies with the aggregator's key.
 *
 * Input: beats arrive on UART2 (RX GPIO16) in the runner's binary format: per beat the model's input bytes
 * (int8 wave window, then int8 RR features), already quantized. On-device R-peak detection needs the C
 * R-peak detector, which the C core does not have yet (firmware/README.md).
 *
 * Firmware release (topic pw/<fleet>/firmware, built by training/codegen/release.py): CHUNK messages in index
 * order carrying a signed head (fleet, version, length, SHA-256), its Ed25519 signature and the image
 * (firmware/core/pw_update.h). The head is checked (fleet, newer version, signature) before the first byte
 * goes to the idle OTA partition; the boot partition switches only when the streamed image's SHA-256
 * matches. */
#include <stdio.h>
#include <string.h>

#include "driver/uart.h"
#include "esp_event.h"
#include "esp_log.h"
#include "esp_ota_ops.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "esp_wifi.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "mqtt_client.h"
#include "nvs_flash.h"
#include "sodium.h"

#include "pw_kernels.h"
#include "pw_model.h"
#include "pw_update.h"
#include "pw_wire.h"

#define PW_UART UART_NUM_2
#define PW_RUN_LENGTH 3 /* consecutive V (or S) beats that make an alert, as edge_runtime/alerts.py */

static const char *TAG = "pulsewire";
static const char *CLASSES = "NSVFQ";
/* the aggregator's Ed25519 public key (keys/aggregator.pub, raw 32 bytes): set at build time */
static const uint8_t pw_release_key[32] = {0};

static esp_mqtt_client_handle_t pw_mqtt;
static uint32_t pw_boot_id, pw_alert_seq, pw_beats;
#ifndef PW_FIRMWARE_VERSION
#define PW_FIRMWARE_VERSION 1 /* releases must be newer */
#endif

/* ---- MQTT: alerts and status ---- */

static void pw_topic(char *out, size_t cap, const char *what) {
    snprintf(out, cap, "pw/%s/%s", PW_FLEET, what);
}

static void pw_publish_status(const char *state) {
    static uint8_t msg[256];
    pw_status_counter_t counters[2] = {{"beats", pw_beats}, {"uptime_s", (uint32_t)(esp_timer_get_time() / 1000000)}};
    size_t n = pw_status_message(msg, sizeof msg, PW_FLEET, PW_DEVICE_ID, state, counters, 2);
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

/* ---- firmware (= model) update: the C core's pw_update with ESP-IDF flash and libsodium ---- */

static pw_update_t pw_up;
static esp_ota_handle_t pw_ota;
static const esp_partition_t *pw_ota_part;

static int pw_verify(const uint8_t *signed_head, const uint8_t *signature, void *ctx) {
    (void)ctx;
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
        ESP_LOGI(TAG, "signed firmware %lu installed, restarting", (unsigned long)pw_up.version);
        pw_publish_status("updating");
        esp_restart();
    }
}

static void pw_mqtt_event(void *arg, esp_event_base_t base, int32_t id, void *data) {
    (void)arg;
    (void)base;
    esp_mqtt_event_handle_t ev = data;
    char topic[96];
    if (id == MQTT_EVENT_CONNECTED) { /* subscribe on every connect: reconnects restore it */
        pw_topic(topic, sizeof topic, "firmware");
        esp_mqtt_client_subscribe(pw_mqtt, topic, 1);
        pw_publish_status("online");
    } else if (id == MQTT_EVENT_DATA && ev->current_data_offset == 0 && ev->data_len == ev->total_data_len) {
        pw_on_chunk((const uint8_t *)ev->data, (size_t)ev->data_len);
    }
}

static void pw_connect(void) {
    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(esp_event_loop_create_default());
    esp_netif_create_default_wifi_sta();
    wifi_init_config_t wcfg = WIFI_INIT_CONFIG_DEFAULT();
    ESP_ERROR_CHECK(esp_wifi_init(&wcfg));
    wifi_config_t sta = {0};
    strncpy((char *)sta.sta.ssid, PW_WIFI_SSID, sizeof sta.sta.ssid);
    strncpy((char *)sta.sta.password, PW_WIFI_PASS, sizeof sta.sta.password);
    ESP_ERROR_CHECK(esp_wifi_set_mode(WIFI_MODE_STA));
    ESP_ERROR_CHECK(esp_wifi_set_config(WIFI_IF_STA, &sta));
    ESP_ERROR_CHECK(esp_wifi_start());
    ESP_ERROR_CHECK(esp_wifi_connect());

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
    };
    pw_mqtt = esp_mqtt_client_init(&cfg);
    esp_mqtt_client_register_event(pw_mqtt, ESP_EVENT_ANY_ID, pw_mqtt_event, NULL);
    esp_mqtt_client_start(pw_mqtt);
}

/* ---- beats ---- */

static void pw_beat_task(void *arg) {
    (void)arg;
    char run_cls = 0;
    uint32_t run_len = 0, run_permille = 0;
    for (;;) {
        for (unsigned i = 0; i < PW_MODEL_INPUTS; i++) {
            size_t need = pw_model_input_size(i), got = 0;
            while (got < need) {
                int n = uart_read_bytes(PW_UART, (uint8_t *)pw_model_input(i) + got, need - got, portMAX_DELAY);
                if (n > 0) got += (size_t)n;
            }
        }
        if (pw_model_invoke() != PW_OK) continue;
        const int8_t *out = pw_model_output(0);
        uint16_t k = pw_argmax_s8(out, (uint16_t)pw_model_output_size(0));
        uint16_t permille = (uint16_t)(((int32_t)out[k] + 128) * 1000 / 256); /* output scale 1/256, zp -128 */
        char cls = CLASSES[k];
        pw_beats++;
        if (cls == 'V' || cls == 'S') {
            run_len = cls == run_cls ? run_len + 1 : 1;
            run_permille = cls == run_cls ? run_permille + permille : permille;
            run_cls = cls;
            if (run_len == PW_RUN_LENGTH) pw_publish_alert(cls, pw_beats - PW_RUN_LENGTH, run_len, run_permille / run_len);
        } else {
            run_cls = 0;
            run_len = 0;
        }
        if (pw_beats % 60 == 0) pw_publish_status("online");
    }
}

void app_main(void) {
    esp_err_t err = nvs_flash_init();
    if (err == ESP_ERR_NVS_NO_FREE_PAGES || err == ESP_ERR_NVS_NEW_VERSION_FOUND) {
        ESP_ERROR_CHECK(nvs_flash_erase());
        ESP_ERROR_CHECK(nvs_flash_init());
    }
    if (sodium_init() < 0) ESP_LOGE(TAG, "libsodium failed to start: updates will be refused");
    esp_ota_mark_app_valid_cancel_rollback(); /* this image booted: keep it */
    pw_update_init(&pw_up, pw_fleet_id(PW_FLEET), PW_FIRMWARE_VERSION, pw_verify, pw_flash_write, NULL);
    pw_boot_id = esp_random();
    uart_config_t ucfg = {.baud_rate = 115200, .data_bits = UART_DATA_8_BITS, .parity = UART_PARITY_DISABLE,
                          .stop_bits = UART_STOP_BITS_1, .flow_ctrl = UART_HW_FLOWCTRL_DISABLE};
    ESP_ERROR_CHECK(uart_driver_install(PW_UART, 2048, 0, 0, NULL, 0));
    ESP_ERROR_CHECK(uart_param_config(PW_UART, &ucfg));
    ESP_ERROR_CHECK(uart_set_pin(PW_UART, UART_PIN_NO_CHANGE, 16, UART_PIN_NO_CHANGE, UART_PIN_NO_CHANGE));
    ESP_LOGI(TAG, "model %.12s, arena %u bytes", pw_model_sha256, (unsigned)PW_MODEL_ARENA_BYTES);
    pw_connect();
    xTaskCreate(pw_beat_task, "pw_beats", 4096, NULL, 5, NULL);
}
