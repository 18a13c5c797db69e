/* int8 kernels of the pulsewire C core: the TFLite int8 reference semantics (per-channel requantization,
 * zero points, fused activation as a clamp), in plain loops. One kernel per file (pw_<op>.c); parameters
 * are computed once by the generator (training/codegen) and live in flash as const structs.
 *
 * Layout is NHWC as in TFLite. A 1-D model (Conv1D) is the H = 1 case. Every kernel writes an output
 * that never overlaps its inputs (the generator's arena plan guarantees it). */
#ifndef PW_KERNELS_H
#define PW_KERNELS_H

#include <stdint.h>

#include "pw_status.h"

/* Requantization of int32 accumulators: per output channel (n = channels) or per tensor (n = 1). */
typedef struct {
    const int32_t *multiplier; /* Q0.31, see pw_fixedpoint.h */
    const int8_t *shift;
    uint16_t n;
} pw_requant_t;

typedef struct {
    uint16_t batches, in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w;
    uint8_t stride_h, stride_w, dilation_h, dilation_w;
    uint8_t pad_h, pad_w; /* padding before the first row / column (SAME: computed by the generator) */
    int32_t in_zp, out_zp, act_min, act_max;
    pw_requant_t rq;
} pw_conv_params_t;

/* CONV_2D: filter OHWI [out_c][k_h][k_w][in_c], bias int32 [out_c] (may be NULL). */
pw_status_t pw_conv2d_s8(const pw_conv_params_t *p, const int8_t *input, const int8_t *filter, const int32_t *bias,
                         int8_t *output);

/* DEPTHWISE_CONV_2D: filter [1][k_h][k_w][out_c], out_c = in_c * depth_multiplier. */
pw_status_t pw_depthwise_conv2d_s8(const pw_conv_params_t *p, uint16_t depth_multiplier, const int8_t *input,
                                   const int8_t *filter, const int32_t *bias, int8_t *output);

typedef struct {
    uint16_t batches, in_h, in_w, channels, out_h, out_w, k_h, k_w;
    uint8_t stride_h, stride_w, pad_h, pad_w;
    int32_t act_min, act_max;
} pw_pool_params_t;

/* MAX_POOL_2D and AVERAGE_POOL_2D (input and output share scale and zero point, as TFLite requires). */
pw_status_t pw_max_pool2d_s8(const pw_pool_params_t *p, const int8_t *input, int8_t *output);
pw_status_t pw_avg_pool2d_s8(const pw_pool_params_t *p, const int8_t *input, int8_t *output);

/* MEAN over one contiguous run of axes: the input viewed as [outer][reduce][inner], output [outer][inner];
 * the sum is requantized with multiplier/shift (1/reduce folded in). */
typedef struct {
    uint32_t outer, reduce, inner;
    int32_t in_zp, out_zp, multiplier, shift;
} pw_mean_params_t;

pw_status_t pw_mean_s8(const pw_mean_params_t *p, const int8_t *input, int8_t *output);

/* How FULLY_CONNECTED rounds its requantization. The three int8 interpreters disagree here (and only
 * here, on pulsewire's models), so the generator picks which one to be bit-exact with:
 * PW_FC_ROUND_TFLM        TFLite-Micro (and TFLite's integer reference): doubling high multiply, then a
 *                         rounding right shift with ties away from zero (the default);
 * PW_FC_ROUND_LITERT_OPT  LiteRT's optimized kernels (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES):
 *                         the same multiply, then a right shift with ties toward +infinity;
 * PW_FC_ROUND_LITERT_REF  LiteRT's reference kernels (BUILTIN_REF): acc * (input_scale * filter_scale /
 *                         output_scale) in double, rounded half away from zero (needs double arithmetic). */
typedef enum { PW_FC_ROUND_TFLM = 0, PW_FC_ROUND_LITERT_OPT = 1, PW_FC_ROUND_LITERT_REF = 2 } pw_fc_rounding_t;

typedef struct {
    uint16_t batches, in_depth, out_depth;
    int32_t in_zp, filter_zp, out_zp, act_min, act_max;
    pw_requant_t rq;           /* n = out_depth (per-channel) or 1 */
    uint8_t rounding;          /* pw_fc_rounding_t */
    const double *ideal_scale; /* PW_FC_ROUND_LITERT_REF only: rq.n effective scales, else NULL */
} pw_fc_params_t;

/* FULLY_CONNECTED: filter [out_depth][in_depth], bias int32 [out_depth] (may be NULL). The _ideal variant
 * is the PW_FC_ROUND_LITERT_REF rounding (double arithmetic, in its own file). */
pw_status_t pw_fully_connected_s8(const pw_fc_params_t *p, const int8_t *input, const int8_t *filter,
                                  const int32_t *bias, int8_t *output);
pw_status_t pw_fully_connected_ideal_s8(const pw_fc_params_t *p, const int8_t *input, const int8_t *filter,
                                        const int32_t *bias, int8_t *output);

/* CONCATENATION of n inputs (same scale and zero point, as int8 TFLite requires), viewed as
 * [outer][axis_i * inner]: copy_bytes[i] = axis_i * inner. */
#define PW_CONCAT_MAX_INPUTS 8
typedef struct {
    uint32_t outer;
    uint8_t n;
    uint32_t copy_bytes[PW_CONCAT_MAX_INPUTS];
} pw_concat_params_t;

pw_status_t pw_concat_s8(const pw_concat_params_t *p, const int8_t *const *inputs, int8_t *output);

/* SOFTMAX int8 -> int8 (output scale 1/256, zero point -128), TFLite's fixed-point reference: the input
 * differences to the row maximum are scaled by beta * input_scale (input_multiplier, input_left_shift), exp
 * in gemmlowp fixed point, and diff_min cuts off differences whose exp underflows. */
typedef struct {
    uint32_t rows, depth;
    int32_t input_multiplier, input_left_shift, diff_min;
} pw_softmax_params_t;

pw_status_t pw_softmax_s8(const pw_softmax_params_t *p, const int8_t *input, int8_t *output);

/* QUANTIZE int8 -> int8: a change of scale and zero point. */
typedef struct {
    uint32_t size;
    int32_t in_zp, out_zp, multiplier, shift;
} pw_requantize_params_t;

pw_status_t pw_requantize_s8(const pw_requantize_params_t *p, const int8_t *input, int8_t *output);

/* ADD int8, same shapes (no broadcasting). */
typedef struct {
    uint32_t size;
    int32_t in1_zp, in2_zp, out_zp, left_shift;
    int32_t in1_multiplier, in1_shift, in2_multiplier, in2_shift, out_multiplier, out_shift;
    int32_t act_min, act_max;
} pw_add_params_t;

pw_status_t pw_add_s8(const pw_add_params_t *p, const int8_t *input1, const int8_t *input2, int8_t *output);

/* Index of the largest value (first one on ties): the class of a beat. */
uint16_t pw_argmax_s8(const int8_t *values, uint16_t n);

#endif
