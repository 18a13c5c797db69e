/* Minimal Cortex-M4 start-up for bare-metal runs under QEMU (mps2-an386) with semihosting: vector table,
 * reset handler (copy .data, zero .bss, enable the FPU if built for it, semihosting stdio), then main with
 * a fixed command line, and exit through semihosting with main's status. Newlib's rdimon crt0 is not used
 * (it locks the CPU up on this machine, see /work/shared/ENVIRONMENT.md). */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(int argc, char **argv);
extern void initialise_monitor_handles(void);

void pw_reset_handler(void);
void pw_fault_handler(void);
void _init(void);
void _fini(void);
void _init(void) {}
void _fini(void) {}

__attribute__((section(".isr_vector"), used)) static const void *const pw_vectors[16] = {
    &_estack, (const void *)pw_reset_handler, (const void *)pw_fault_handler, (const void *)pw_fault_handler,
    (const void *)pw_fault_handler, (const void *)pw_fault_handler, (const void *)pw_fault_handler, 0, 0, 0, 0,
    (const void *)pw_fault_handler, (const void *)pw_fault_handler, 0, (const void *)pw_fault_handler,
    (const void *)pw_fault_handler};

/* semihosting SYS_EXIT: reason 0x20026 (ApplicationExit) makes QEMU exit 0, anything else exit 1 */
static void pw_semihost_exit(int ok) {
    register uint32_t r0 __asm__("r0") = 0x18;
    register uint32_t r1 __asm__("r1") = ok ? 0x20026u : 0x20024u; /* 0x20024: RunTimeErrorUnknown */
    __asm__ volatile("bkpt 0xab" : : "r"(r0), "r"(r1) : "memory");
    for (;;) {
    }
}

void pw_fault_handler(void) { pw_semihost_exit(0); }

#ifndef PW_ARGV
#define PW_ARGV {"run_model", "inputs.bin", "outputs.bin", 0}
#endif

void pw_reset_handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss; dst++) *dst = 0;
#ifdef __ARM_FP
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20); /* CPACR: full access to CP10 and CP11 */
    __asm__ volatile("dsb\n isb");
#endif
    initialise_monitor_handles();
    static char *argv[] = PW_ARGV;
    int argc = 0;
    while (argv[argc]) argc++;
    pw_semihost_exit(main(argc, argv) == 0);
}
