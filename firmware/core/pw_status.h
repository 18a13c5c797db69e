/* The one status enum of the pulsewire C core: every function that can fail returns it; callers return
 * early on anything but PW_OK. */
#ifndef PW_STATUS_H
#define PW_STATUS_H

typedef enum {
    PW_OK = 0,
    PW_ERR_ARG = 1,     /* a NULL pointer or a parameter out of range */
    PW_ERR_SHAPE = 2,   /* shapes that do not fit together (a generator bug, never data-dependent) */
    PW_ERR_SPACE = 3,   /* an output buffer too small */
    PW_ERR_DATA = 4     /* input data the function refuses (e.g. not yet enough samples) */
} pw_status_t;

#endif
