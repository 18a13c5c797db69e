/* The device under test for hardware-in-the-loop runs on QEMU's mps2-an386 (Cortex-M4): the HIL protocol
 * (core/pw_hil.h) on UART0, a CMSDK APB UART at 0x40004000 that QEMU connects to a pty
 * (`qemu-system-arm -M mps2-an386 -nographic -semihosting -serial pty -kernel hil.elf`). Polled, sleeping
 * in WFI while nothing arrives: QEMU holds the host's bytes back while the receive register is full, so
 * nothing is lost and the pacing is the host's. Semihosting is used only by startup.c (exit). A real Cortex-M board replaces
 * the two register helpers with its UART driver (boards/stm32l4/src/main.c). */
#include <stdint.h>

#include "pw_hil.h"

#define UART0_BASE 0x40004000u
#define UART_DATA (*(volatile uint32_t *)(UART0_BASE + 0x00u))
#define UART_STATE (*(volatile uint32_t *)(UART0_BASE + 0x04u)) /* bit 0 TX full, bit 1 RX full */
#define UART_CTRL (*(volatile uint32_t *)(UART0_BASE + 0x08u))  /* bit 0 TX enable, bit 1 RX enable */
#define UART_INTSTATUS (*(volatile uint32_t *)(UART0_BASE + 0x0Cu)) /* write 1 to clear; bit 1 RX */
#define UART_BAUDDIV (*(volatile uint32_t *)(UART0_BASE + 0x10u))
#define UART_TX_FULL 1u
#define UART_RX_FULL 2u
#define UART_RX_INT_ENABLE 8u
#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)
#define NVIC_ICPR0 (*(volatile uint32_t *)0xE000E280u)
#define UART0_RX_IRQ 0u /* mps2-an386: UART0 receive interrupt */

static pw_hil_t hil; /* static: the board owns it */

static void uart_write(const char *bytes, size_t n, void *ctx) {
    (void)ctx;
    for (size_t i = 0; i < n; i++) {
        while (UART_STATE & UART_TX_FULL) {
        }
        UART_DATA = (uint8_t)bytes[i];
    }
}

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    UART_BAUDDIV = 217u; /* 25 MHz / 115200; QEMU ignores the rate */
    /* Idle in WFI between bytes (QEMU then stops the CPU): the receive interrupt wakes the core but is never
     * taken (PRIMASK set, no handler needed); its pending bit is cleared before each sleep. */
    __asm__ volatile("cpsid i");
    UART_CTRL = 3u | UART_RX_INT_ENABLE;
    NVIC_ISER0 = 1u << UART0_RX_IRQ;
    pw_hil_init(&hil, uart_write, 0, 0);
    pw_hil_send(&hil, "# pulsewire hil on cortex-m4 (qemu mps2-an386)");
    for (;;) {
        if (UART_STATE & UART_RX_FULL) {
            const char c = (char)UART_DATA;
            pw_hil_feed(&hil, &c, 1);
            continue;
        }
        UART_INTSTATUS = UART_RX_FULL;
        NVIC_ICPR0 = 1u << UART0_RX_IRQ;
        if (!(UART_STATE & UART_RX_FULL)) __asm__ volatile("wfi"); /* a byte arriving now pends and wakes it */
    }
}
