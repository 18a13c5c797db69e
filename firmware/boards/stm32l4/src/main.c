/* pulsewire on an STM32L4 Nucleo (Cortex-M4F, STM32Cube HAL): beats in on USART2 (the ST-LINK virtual COM
 * port, 115200 8N1) in the runner's binary format (per beat the model's int8 inputs), the class index and
 * the int8 outputs back out. The same generated model and kernels as the QEMU run, which is where they are
 * tested (tests/test_firmware_model.py); this file only wires them to the board's UART. Clock: the
 * default 4 MHz MSI after reset (raise it with the usual SystemClock_Config for speed). */
#include "stm32l4xx_hal.h"

#include "pw_kernels.h"
#include "pw_model.h"

static UART_HandleTypeDef pw_uart;

void SysTick_Handler(void) { HAL_IncTick(); }

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
}

int main(void) {
    HAL_Init();
    pw_uart_init();
    for (;;) {
        for (unsigned i = 0; i < PW_MODEL_INPUTS; i++) {
            HAL_UART_Receive(&pw_uart, (uint8_t *)pw_model_input(i), (uint16_t)pw_model_input_size(i), HAL_MAX_DELAY);
        }
        uint8_t reply[1 + PW_MODEL_OUTPUT0_BYTES];
        reply[0] = pw_model_invoke() == PW_OK ? (uint8_t)pw_argmax_s8(pw_model_output(0), PW_MODEL_OUTPUT0_BYTES) : 0xFF;
        for (unsigned k = 0; k < PW_MODEL_OUTPUT0_BYTES; k++) reply[1 + k] = (uint8_t)pw_model_output(0)[k];
        HAL_UART_Transmit(&pw_uart, reply, sizeof reply, HAL_MAX_DELAY);
    }
}
