/* pulsewire on an STM32L4 Nucleo (Cortex-M4F, STM32Cube HAL) as a hardware-in-the-loop device: the HIL
 * protocol (core/pw_hil.h, docs/hil.md) on USART2, the ST-LINK virtual COM port (115200 8N1, /dev/ttyACM0
 * on the host). Received bytes go into a ring buffer from the USART interrupt, so the UART never overruns
 * while a beat is being classified (about 10 ms at 80 MHz); the main loop hands them to the protocol. The
 * same core code (front-end, detector, generated model, protocol) runs on the Cortex-M4 under QEMU, where
 * it is tested (tests/test_hil.py); this file only wires it to the board. Not compiled on the project's
 * build machines (firmware/README.md). Clock: 80 MHz from MSI through the PLL. */
#include "stm32l4xx_hal.h"

#include "pw_hil.h"

#define PW_RX_RING 2048u /* power of two; >= the host's window of 4 lines of up to 400 bytes */

static UART_HandleTypeDef pw_uart;
static pw_hil_t pw_hil; /* static: the board owns it */
static volatile uint8_t pw_rx[PW_RX_RING];
static volatile uint32_t pw_rx_head, pw_rx_tail, pw_rx_lost;

void SysTick_Handler(void) { HAL_IncTick(); }

/* Every received byte into the ring; a full ring or a hardware overrun loses bytes, counted. */
void USART2_IRQHandler(void) {
    const uint32_t isr = USART2->ISR;
    if (isr & USART_ISR_ORE) {
        USART2->ICR = USART_ICR_ORECF;
        pw_rx_lost++;
    }
    if (isr & USART_ISR_RXNE) {
        const uint8_t c = (uint8_t)USART2->RDR;
        if (pw_rx_head - pw_rx_tail < PW_RX_RING) {
            pw_rx[pw_rx_head % PW_RX_RING] = c;
            pw_rx_head++;
        } else {
            pw_rx_lost++;
        }
    }
}

static void pw_clock_80mhz(void) {
    RCC_OscInitTypeDef osc = {0};
    RCC_ClkInitTypeDef clk = {0};
    osc.OscillatorType = RCC_OSCILLATORTYPE_MSI;
    osc.MSIState = RCC_MSI_ON;
    osc.MSICalibrationValue = RCC_MSICALIBRATION_DEFAULT;
    osc.MSIClockRange = RCC_MSIRANGE_6; /* 4 MHz */
    osc.PLL.PLLState = RCC_PLL_ON;
    osc.PLL.PLLSource = RCC_PLLSOURCE_MSI;
    osc.PLL.PLLM = 1;
    osc.PLL.PLLN = 40; /* 4 MHz x 40 / 2 = 80 MHz */
    osc.PLL.PLLR = RCC_PLLR_DIV2;
    osc.PLL.PLLP = RCC_PLLP_DIV7;
    osc.PLL.PLLQ = RCC_PLLQ_DIV2;
    if (HAL_RCC_OscConfig(&osc) != HAL_OK) return; /* stays at 4 MHz MSI: slower, still correct */
    clk.ClockType = RCC_CLOCKTYPE_HCLK | RCC_CLOCKTYPE_SYSCLK | RCC_CLOCKTYPE_PCLK1 | RCC_CLOCKTYPE_PCLK2;
    clk.SYSCLKSource = RCC_SYSCLKSOURCE_PLLCLK;
    clk.AHBCLKDivider = RCC_SYSCLK_DIV1;
    clk.APB1CLKDivider = RCC_HCLK_DIV1;
    clk.APB2CLKDivider = RCC_HCLK_DIV1;
    HAL_RCC_ClockConfig(&clk, FLASH_LATENCY_4);
}

static void pw_uart_init(void) {
    GPIO_InitTypeDef pins = {0};
    __HAL_RCC_GPIOA_CLK_ENABLE();
    __HAL_RCC_USART2_CLK_ENABLE();
    pins.Pin = GPIO_PIN_2 | GPIO_PIN_3; /* PA2 TX, PA3 RX */
    pins.Mode = GPIO_MODE_AF_PP;
    pins.Pull = GPIO_NOPULL;
    pins.Speed = GPIO_SPEED_FREQ_VERY_HIGH;
    pins.Alternate = GPIO_AF7_USART2;
    HAL_GPIO_Init(GPIOA, &pins);
    pw_uart.Instance = USART2;
    pw_uart.Init.BaudRate = 115200;
    pw_uart.Init.WordLength = UART_WORDLENGTH_8B;
    pw_uart.Init.StopBits = UART_STOPBITS_1;
    pw_uart.Init.Parity = UART_PARITY_NONE;
    pw_uart.Init.Mode = UART_MODE_TX_RX;
    pw_uart.Init.HwFlowCtl = UART_HWCONTROL_NONE;
    pw_uart.Init.OverSampling = UART_OVERSAMPLING_16;
    HAL_UART_Init(&pw_uart);
    USART2->CR1 |= USART_CR1_RXNEIE;
    HAL_NVIC_SetPriority(USART2_IRQn, 0, 0);
    HAL_NVIC_EnableIRQ(USART2_IRQn);
}

static void pw_uart_write(const char *bytes, size_t n, void *ctx) {
    (void)ctx;
    HAL_UART_Transmit(&pw_uart, (uint8_t *)bytes, (uint16_t)n, HAL_MAX_DELAY);
}

int main(void) {
    HAL_Init();
    pw_clock_80mhz();
    pw_uart_init();
    pw_hil_init(&pw_hil, pw_uart_write, 0, 0);
    pw_hil_send(&pw_hil, pw_hil_selftest() ? "# pulsewire hil on stm32l4: self-test passed"
                                           : "# pulsewire hil on stm32l4: SELF-TEST FAILED");
    for (;;) {
        while (pw_rx_tail != pw_rx_head) {
            const char c = (char)pw_rx[pw_rx_tail % PW_RX_RING];
            pw_rx_tail++;
            pw_hil_feed(&pw_hil, &c, 1);
        }
        pw_hil.count.overruns = pw_rx_lost; /* reported in the C line */
    }
}
