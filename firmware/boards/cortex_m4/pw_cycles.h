/* Instruction counting and stack measurement for the Cortex-M4 runs under QEMU.
 *
 * With `qemu-system-arm -icount shift=0` every instruction advances virtual time by 1 ns, and SysTick
 * (clocked from the CPU clock) ticks with virtual time, so SysTick ticks are proportional to instructions
 * executed. The ratio is calibrated on a loop of known length (pw_cycles_calibrate).
 *
 * The stack is painted with a pattern below the caller's stack pointer before an inference and scanned
 * after it: the lowest overwritten word bounds the inference's stack use (upper bound: the painting stops
 * 64 bytes below the stack pointer). */
#ifndef PW_CYCLES_H
#define PW_CYCLES_H

#include <stdint.h>

#define PW_SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define PW_SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define PW_SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define PW_STACK_PATTERN 0xA5A5A5A5u

extern uint32_t _sstack;
static uint32_t pw_stack_top_at_paint, pw_stack_peak_bytes;

static inline void pw_systick_start(void) {
    PW_SYST_RVR = 0x00FFFFFFu;
    PW_SYST_CVR = 0;
    PW_SYST_CSR = 5u; /* enable, processor clock, no interrupt */
}

/* SysTick counts down from 2^24 - 1: ticks elapsed between two readings (less than one wrap apart). */
static inline uint32_t pw_systick_elapsed(uint32_t before, uint32_t after) {
    return (before - after) & 0x00FFFFFFu;
}

static inline void pw_stack_paint(void) {
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    pw_stack_top_at_paint = sp;
    for (volatile uint32_t *p = &_sstack; (uint32_t)p < sp - 64u; p++) *p = PW_STACK_PATTERN;
}

static inline void pw_stack_note(void) {
    const uint32_t *p = &_sstack;
    while (*p == PW_STACK_PATTERN) p++;
    uint32_t used = pw_stack_top_at_paint - (uint32_t)p;
    if (used > pw_stack_peak_bytes) pw_stack_peak_bytes = used;
}

static inline uint32_t pw_stack_max_used(void) { return pw_stack_peak_bytes; }

/* SysTick ticks for a loop of 2 * n instructions (subs + bne per iteration). */
static inline uint32_t pw_cycles_calibrate(uint32_t n) {
    uint32_t before = PW_SYST_CVR;
    __asm__ volatile("1: subs %0, %0, #1\n bne 1b" : "+r"(n) : : "cc");
    return pw_systick_elapsed(before, PW_SYST_CVR);
}

#endif
