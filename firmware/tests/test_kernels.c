/* Host unit tests of the int8 kernels and fixed-point helpers on cases small enough to compute by hand
 * (the whole-model tests in tests/test_firmware_model.py check them against TFLite-Micro bit for bit). */
#include <stdio.h>
#include <string.h>

#include "../core/pw_dot.h"
#include "../core/pw_fixedpoint.h"
#include "../core/pw_kernels.h"

static int failures = 0;
#define CHECK(cond, ...)                                                                                       \
    do {                                                                                                       \
        if (!(cond)) { printf("FAIL line %d: ", __LINE__); printf(__VA_ARGS__); printf("\n"); failures++; } \
    } while (0)

static void test_fixed_point(void) {
    /* 0.5 = 2^30 * 2^(0 - 31) */
    CHECK(pw_mul_by_quantized_multiplier(1000, 1 << 30, 0) == 500, "1000 * 0.5");
    /* 0.75 * 2^-1: 100 * 0.375 = 37.5 -> 38 (ties away from zero in the final shift) */
    CHECK(pw_mul_by_quantized_multiplier(100, 1610612736, -1) == 38, "100 * 0.375 = %d",
          (int)pw_mul_by_quantized_multiplier(100, 1610612736, -1));
    CHECK(pw_mul_by_quantized_multiplier(-100, 1610612736, -1) == -38, "-100 * 0.375");
    /* a left shift: 3 * 0.5 * 2^2 = 6 */
    CHECK(pw_mul_by_quantized_multiplier(3, 1 << 30, 2) == 6, "3 * 2");
    CHECK(pw_rounding_divide_by_pot(5, 1) == 3 && pw_rounding_divide_by_pot(-5, 1) == -3, "rounding shift of +-2.5");
    CHECK(pw_sat_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX, "the one overflow saturates");
    CHECK(pw_sat_shift_left(1 << 30, 2) == INT32_MAX && pw_sat_shift_left(-(1 << 30), 2) == INT32_MIN, "saturation");
    CHECK(pw_count_leading_zeros(1) == 31 && pw_count_leading_zeros(0) == 32, "clz");
}

static const int32_t half[4] = {1 << 30, 1 << 30, 1 << 30, 1 << 30};
static const int8_t zero_shift[4] = {0, 0, 0, 0};

static void test_conv_same_padding(void) {
    /* 1-D input [1, 2, 3, 4, 5] (zero point 0), kernel [1, 1, 1] with SAME padding, multiplier 0.5:
     * sums 3, 6, 9, 12, 9 -> 1.5, 3, 4.5, 6, 4.5 -> 2, 3, 5, 6, 5 (ties away from zero) */
    const int8_t in[5] = {1, 2, 3, 4, 5}, w[3] = {1, 1, 1};
    int8_t out[5];
    pw_conv_params_t p = {1, 1, 5, 1, 1, 5, 1, 1, 3, 1, 1, 1, 1, 0, 1, 0, 0, -128, 127, {half, zero_shift, 1}};
    CHECK(pw_conv2d_s8(&p, in, w, NULL, out) == PW_OK, "conv status");
    const int8_t want[5] = {2, 3, 5, 6, 5};
    CHECK(memcmp(out, want, 5) == 0, "conv [%d %d %d %d %d]", out[0], out[1], out[2], out[3], out[4]);
    /* a ReLU clamp at the zero point, an input zero point of 1 and a bias of -10 */
    const int32_t bias[1] = {-10};
    p.in_zp = 1;
    p.act_min = 0;
    CHECK(pw_conv2d_s8(&p, in, w, bias, out) == PW_OK, "conv status");
    /* (x - 1) sums: 1, 3, 6, 9, 7 (padding contributes 0, not -1); -10 -> -9, -7, -4, -1, -3 -> all clamp 0 */
    CHECK(out[0] == 0 && out[3] == 0 && out[4] == 0, "conv relu clamp");
}

static void test_depthwise(void) {
    /* two channels, kernel 1x2 per channel: ch0 weights (1, 1), ch1 (2, -1); VALID; input
     * [[1, 10], [3, 20], [5, 30]] (W=3, C=2) -> ch0 1+3, 3+5 = 4, 8; ch1 20-20=... 2*10-20=0, 2*20-30=10
     * times 0.5 -> 2, 4 and 0, 5 */
    const int8_t in[6] = {1, 10, 3, 20, 5, 30}, w[4] = {1, 2, 1, -1};
    int8_t out[4];
    pw_conv_params_t p = {1, 1, 3, 2, 1, 2, 2, 1, 2, 1, 1, 1, 1, 0, 0, 0, 0, -128, 127, {half, zero_shift, 2}};
    CHECK(pw_depthwise_conv2d_s8(&p, 1, in, w, NULL, out) == PW_OK, "dw status");
    CHECK(out[0] == 2 && out[1] == 0 && out[2] == 4 && out[3] == 5, "dw [%d %d %d %d]", out[0], out[1], out[2], out[3]);
}

static void test_pools_mean_concat(void) {
    const int8_t in[6] = {-5, 7, 3, -2, 100, -128};
    int8_t out[4];
    pw_pool_params_t p = {1, 1, 6, 1, 1, 3, 1, 2, 1, 2, 0, 0, -128, 127};
    CHECK(pw_max_pool2d_s8(&p, in, out) == PW_OK && out[0] == 7 && out[1] == 3 && out[2] == 100, "max pool");
    /* averages -5+7=1, (3-2)/2=0.5 -> 1, (100-128)/2=-14 */
    CHECK(pw_avg_pool2d_s8(&p, in, out) == PW_OK && out[0] == 1 && out[1] == 1 && out[2] == -14, "avg pool %d %d %d",
          out[0], out[1], out[2]);
    /* mean of 4 values with multiplier 1/4 folded in (2^30 with shift -1), zero points 0: 10+20+30+41 = 101,
     * 101 / 4 = 25.25, but TFLite rounds twice: 101 * 0.5 = 50.5 -> 51 in the high multiply, 51 / 2 = 25.5
     * -> 26 in the shift. The reference's 26, not the ideal 25. */
    const int8_t m_in[4] = {10, 20, 30, 41};
    pw_mean_params_t mp = {1, 4, 1, 0, 0, 1 << 30, -1};
    CHECK(pw_mean_s8(&mp, m_in, out) == PW_OK && out[0] == 26, "mean %d", out[0]);
    const int8_t a[2] = {1, 2}, b[1] = {3};
    const int8_t *ins[2] = {a, b};
    pw_concat_params_t cp = {1, 2, {2, 1}};
    CHECK(pw_concat_s8(&cp, ins, out) == PW_OK && out[0] == 1 && out[1] == 2 && out[2] == 3, "concat");
}

static void test_fc_and_softmax(void) {
    /* identity weights: output = input * 0.5 */
    const int8_t w[4] = {1, 0, 0, 1}, in[2] = {40, -40};
    int8_t out[5];
    pw_fc_params_t p = {1, 2, 2, 0, 0, 0, -128, 127, {half, zero_shift, 2}, PW_FC_ROUND_TFLM, NULL};
    CHECK(pw_fully_connected_s8(&p, in, w, NULL, out) == PW_OK && out[0] == 20 && out[1] == -20, "fc");
    /* ties in the doubling high multiply go toward +infinity: 5 * 0.5 = 2.5 -> 3, -5 * 0.5 = -2.5 -> -2 */
    const int8_t tie[2] = {5, -5};
    CHECK(pw_fully_connected_s8(&p, tie, w, NULL, out) == PW_OK && out[0] == 3 && out[1] == -2, "fc ties tflm %d %d",
          out[0], out[1]);
    const int32_t m1[2] = {1 << 30, 1 << 30};
    const int8_t s1[2] = {-1, -1}; /* 0.25 via a right shift of 1 */
    pw_fc_params_t q = {1, 2, 2, 0, 0, 0, -128, 127, {m1, s1, 2}, PW_FC_ROUND_LITERT_OPT, NULL};
    const int8_t tie2[2] = {10, -10}; /* 2.5 and -2.5 after an exact * 0.5: the shift decides the tie */
    p.rq = q.rq;
    CHECK(pw_fully_connected_s8(&p, tie2, w, NULL, out) == PW_OK && out[0] == 3 && out[1] == -3, "tflm: away");
    CHECK(pw_fully_connected_s8(&q, tie2, w, NULL, out) == PW_OK && out[0] == 3 && out[1] == -2, "fc ties litert %d %d",
          out[0], out[1]);
    const double scales[2] = {0.25, 0.25};
    q.rounding = PW_FC_ROUND_LITERT_REF;
    q.ideal_scale = scales;
    CHECK(pw_fully_connected_ideal_s8(&q, tie2, w, NULL, out) == PW_OK && out[0] == 3 && out[1] == -3, "fc ties ref");
    CHECK(pw_fully_connected_s8(&q, tie2, w, NULL, out) == PW_ERR_ARG, "the double rounding is the other kernel");
    /* softmax of five equal values: 1/5 each -> 0.2 * 256 = 51.2 -> 51 - 128 = -77; parameters of
     * input scale 1/16, beta 1 as TFLite computes them */
    const int8_t logits[5] = {3, 3, 3, 3, 3};
    pw_softmax_params_t sp = {1, 5, 1073741824, 23, -248};
    CHECK(pw_softmax_s8(&sp, logits, out) == PW_OK && out[0] == -77 && out[4] == -77, "softmax uniform %d", out[0]);
    /* one dominant logit, 100 / 16 = 6.25 above the rest: exp(-6.25) = 0.00193, p = 1 / 1.0077 = 0.9923 ->
     * 254 - 128 = 126; the others 0.0019 * 256 = 0.49 -> 0 -> -128 */
    const int8_t peaked[5] = {-100, 0, -100, -100, -100};
    CHECK(pw_softmax_s8(&sp, peaked, out) == PW_OK && out[1] == 126 && out[0] == -128, "softmax peaked %d %d", out[1],
          out[0]);
    CHECK(pw_argmax_s8(peaked, 5) == 1, "argmax");
}

static void test_add_and_requantize(void) {
    /* equal scales s, output scale 2s: (a + b) / 2 */
    const int8_t a[2] = {10, -10}, b[2] = {20, -21};
    int8_t out[2];
    /* TFLite Prepare for in scales s, out 2s: in multipliers 0.5 (2^30, 0), out = 2s / (2^20 * 2s) = 2^-20 */
    pw_add_params_t p = {2, 0, 0, 0, 20, 1 << 30, 0, 1 << 30, 0, 1 << 30, -19, -128, 127};
    CHECK(pw_add_s8(&p, a, b, out) == PW_OK && out[0] == 15 && out[1] == -16, "add %d %d", out[0], out[1]);
    pw_requantize_params_t r = {2, 0, 5, 1 << 30, 0};
    CHECK(pw_requantize_s8(&r, a, out) == PW_OK && out[0] == 10 && out[1] == 0, "requantize %d %d", out[0], out[1]);
}

/* the dot product (SIMD on a Cortex-M4) against the plain loop, on extreme values and every tail length */
static void test_dot(void) {
    int8_t w[64], x[64];
    uint32_t seed = 12345;
    const int32_t offsets[3] = {-127, 0, 128};
    for (int trial = 0; trial < 200; trial++) {
        for (int i = 0; i < 64; i++) {
            seed = seed * 1664525u + 1013904223u;
            w[i] = (int8_t)(seed >> 24);
            x[i] = (int8_t)(seed >> 16);
            if (trial % 4 == 0) { w[i] = (i & 1) ? 127 : -128; x[i] = (i & 2) ? 127 : -128; }
        }
        const int n = trial % 41;
        const int32_t off = offsets[trial % 3];
        int32_t want = 0;
        for (int i = 0; i < n; i++) want += (int32_t)w[i] * ((int32_t)x[i] + off);
        CHECK(pw_dot_s8(w, x, n, off) == want, "dot n=%d offset=%d", n, (int)off);
    }
}

int main(void) {
    test_dot();
    test_fixed_point();
    test_conv_same_padding();
    test_depthwise();
    test_pools_mean_concat();
    test_fc_and_softmax();
    test_add_and_requantize();
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
