/*
 * Simulator harness for the DeepBehavior rig firmware: runs the REAL firmware ELF in simavr.
 *
 *   rig_sim FIRMWARE.elf [--realtime|--max]
 *
 * stdout (line protocol, one record per line; other lines may come from simavr and are to be ignored):
 *   PTY <path>                 UART0 is connected to this pseudo-terminal (use it, not /tmp/simavr-uart0)
 *   READY                      loaded, paused; send "go" when the host has opened the port
 *   RUN <cycle>                released
 *   E <pin> <level> <cycle>    an output pin changed (pin = Arduino pin name: D3..D10, D13, A0), or the
 *                              simulated imaging frame clock drove D8
 *   N <cycle>                  answer to "now"
 *   X <reason> <cycle>         the simulation ended
 * stdin (commands, one per line):
 *   go | ir 0|1 | pin <arduino pin> 0|1 | speed realtime|max | now | reset | quit
 *   (reset: an AVR reset like the board's reset button; the firmware boots again and sends BOOT)
 *   wire <output pin> <input pin> | unwire
 *      a jumper: every change of the output drives the input (e.g. wire D6 D12, the TTL loopback)
 *   imaging <rate_hz> <jitter_us> <drift_ppm> <drop_permille> <seed> <width_us> | imaging off
 *      a simulated imaging system's frame clock on D8: frame k rises at start + k * period, where
 *      period = 1 / rate_hz on the imaging system's clock, which runs drift_ppm slow against the AVR's
 *      (a positive drift makes its frames late), plus a uniform jitter of +-jitter_us; each frame's
 *      pulse is missing with probability drop_permille / 1000 (seeded, reproducible); pulses width_us
 *      wide. The first frame rises one period after the command.
 * Times are CPU cycles at 16 MHz (cycle / 16 = microseconds since reset).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <simavr/avr_extint.h>
#include <simavr/avr_ioport.h>
#include <simavr/sim_cycle_timers.h>
#include <simavr/parts/uart_pty.h>
#include <simavr/sim_avr.h>
#include <simavr/sim_elf.h>
#include <simavr/sim_irq.h>

static avr_t *avr;
static uart_pty_t pty;
static int realtime = 1;

struct pinmap {
    const char *name;
    char port;
    int bit;
};
/* Arduino Uno pin -> port bit, for the pins the firmware drives or reads. */
static const struct pinmap outputs[] = {
    {"D3", 'D', 3}, {"D4", 'D', 4}, {"D5", 'D', 5}, {"D6", 'D', 6}, {"D7", 'D', 7},
    {"D9", 'B', 1}, {"D10", 'B', 2}, {"D13", 'B', 5}, {"A0", 'C', 0},
    {"D8", 'B', 0}, /* an input (imaging frame clock): reported when the simulated imaging clock drives it */
};
static const struct pinmap inputs[] = {
    {"D2", 'D', 2}, {"D8", 'B', 0}, {"D11", 'B', 3}, {"D12", 'B', 4},
};

static void set_input(const char *name, int level);

/* A jumper from an output pin to an input pin (index into outputs[] / inputs[], -1 = none). */
static int wire_from = -1;
static const char *wire_to = NULL;

/* The simulated imaging frame clock on D8. */
static struct {
    int on;
    double period;       /* AVR cycles per frame (the imaging clock's drift included) */
    double start;        /* AVR cycle of frame 0 */
    uint64_t frame;      /* next frame number */
    double jitter;       /* +- cycles */
    unsigned drop_permille;
    uint32_t rand;
    avr_cycle_count_t width;
    unsigned generation; /* bumps on every (re)start: a stale timer does nothing */
} img;

static uint32_t img_random(void) {
    uint32_t x = img.rand;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return img.rand = x;
}

static avr_cycle_count_t img_fall(struct avr_t *a, avr_cycle_count_t when, void *param) {
    set_input("D8", 0);
    return 0;
}

static avr_cycle_count_t img_next_rise(void) {
    double u = (img_random() / 4294967296.0) * 2.0 - 1.0;
    double at = img.start + (double)img.frame * img.period + u * img.jitter;
    return at <= (double)avr->cycle ? avr->cycle + 1 : (avr_cycle_count_t)at;
}

static avr_cycle_count_t img_rise(struct avr_t *a, avr_cycle_count_t when, void *param) {
    if (!img.on || (unsigned)(uintptr_t)param != img.generation) return 0;
    int dropped = img.drop_permille && img_random() % 1000 < img.drop_permille;
    if (!dropped) {
        set_input("D8", 1);
        avr_cycle_timer_register(avr, img.width, img_fall, NULL);
    }
    img.frame++;
    return img_next_rise();
}

static void pin_changed(struct avr_irq_t *irq, uint32_t value, void *param) {
    const struct pinmap *p = (const struct pinmap *)param;
    printf("E %s %u %llu\n", p->name, value ? 1u : 0u, (unsigned long long)avr->cycle);
    if (wire_to != NULL && wire_from >= 0 && p == &outputs[wire_from]) set_input(wire_to, value ? 1 : 0);
}

static void relax_extint(void) {
    /* Stock simavr polls low-level external interrupts every cycle; Arduino code never uses them. */
    avr_extint_set_strict_lvl_trig(avr, 0, 0);
    avr_extint_set_strict_lvl_trig(avr, 1, 0);
}

static void set_input(const char *name, int level) {
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        if (strcmp(inputs[i].name, name) == 0) {
            avr_ioport_external_t ext = {
                .name = inputs[i].port,
                .mask = (uint8_t)(1u << inputs[i].bit),
                .value = (uint8_t)(level ? (1u << inputs[i].bit) : 0),
            };
            avr_ioctl(avr, AVR_IOCTL_IOPORT_SET_EXTERNAL(inputs[i].port), &ext);
            avr_raise_irq(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ(inputs[i].port), inputs[i].bit),
                          level ? 1 : 0);
            return;
        }
    }
    printf("ERR unknown input pin %s\n", name);
}

static uint64_t wall_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static char linebuf[256];
static size_t linelen;
static int go;

static void finish(const char *why) {
    printf("X %s %llu\n", why, (unsigned long long)avr->cycle);
    fflush(stdout);
    /* uart_pty_stop() can hang on its thread; the OS closes the pty for us. */
    _exit(0);
}

static void handle_line(char *line) {
    char a[32], b[32];
    int n = sscanf(line, "%31s %31s", a, b);
    if (n < 1) return;
    if (strcmp(a, "go") == 0) {
        go = 1;
    } else if (strcmp(a, "ir") == 0 && n == 2) {
        set_input("D2", atoi(b));
    } else if (strcmp(a, "pin") == 0 && n == 2) {
        char c[32];
        if (sscanf(line, "%*s %31s %31s", b, c) == 2) set_input(b, atoi(c));
    } else if (strcmp(a, "wire") == 0 && n == 2) {
        char c[32];
        wire_from = -1;
        wire_to = NULL;
        if (sscanf(line, "%*s %31s %31s", b, c) == 2) {
            for (size_t i = 0; i < sizeof(outputs) / sizeof(outputs[0]); i++)
                if (strcmp(outputs[i].name, b) == 0) wire_from = (int)i;
            for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++)
                if (strcmp(inputs[i].name, c) == 0) wire_to = inputs[i].name;
        }
        if (wire_from < 0 || wire_to == NULL) {
            wire_from = -1;
            wire_to = NULL;
            printf("ERR wire needs an output and an input pin: %s\n", line);
        } else {
            printf("WIRED %s %s\n", b, c);
        }
    } else if (strcmp(a, "unwire") == 0) {
        wire_from = -1;
        wire_to = NULL;
    } else if (strcmp(a, "imaging") == 0 && n == 2 && strcmp(b, "off") == 0) {
        img.on = 0;
        img.generation++;
        set_input("D8", 0);
    } else if (strcmp(a, "imaging") == 0 && n == 2) {
        double rate, jitter_us, drift_ppm, width_us;
        unsigned drop, seed;
        if (sscanf(line, "%*s %lf %lf %lf %u %u %lf", &rate, &jitter_us, &drift_ppm, &drop, &seed, &width_us) != 6 ||
            rate <= 0 || jitter_us < 0 || width_us <= 0 || drop > 1000) {
            printf("ERR imaging <rate_hz> <jitter_us> <drift_ppm> <drop_permille> <seed> <width_us>: %s\n", line);
        } else {
            img.generation++;
            img.on = 1;
            img.period = 16e6 / rate * (1.0 + drift_ppm * 1e-6);
            img.start = (double)avr->cycle + img.period;
            img.frame = 0;
            img.jitter = jitter_us * 16.0;
            img.drop_permille = drop;
            img.rand = 0x9E3779B9u ^ seed;
            if (!img.rand) img.rand = 1;
            img.width = (avr_cycle_count_t)(width_us * 16.0);
            if (img.width < 1) img.width = 1;
            printf("IMAGING %llu\n", (unsigned long long)(avr_cycle_count_t)img.start);
            avr_cycle_timer_register(avr, img_next_rise() - avr->cycle, img_rise,
                                     (void *)(uintptr_t)img.generation);
        }
    } else if (strcmp(a, "speed") == 0 && n == 2) {
        realtime = strcmp(b, "realtime") == 0;
    } else if (strcmp(a, "reset") == 0) {
        avr_reset(avr);
        relax_extint(); /* avr_reset() restores simavr's strict level-trigger polling */
        printf("RESET %llu\n", (unsigned long long)avr->cycle);
    } else if (strcmp(a, "now") == 0) {
        printf("N %llu\n", (unsigned long long)avr->cycle);
    } else if (strcmp(a, "quit") == 0) {
        finish("quit");
    } else {
        printf("ERR unknown command %s\n", a);
    }
}

/* Read whatever stdin has (non-blocking, or waiting up to timeout_ms) and run its commands. */
static void poll_stdin(int timeout_ms) {
    struct pollfd pfd = {.fd = 0, .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) <= 0) return;
    char buf[512];
    ssize_t r = read(0, buf, sizeof(buf));
    if (r == 0) finish("eof");
    if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        finish("stdin-error");
    }
    for (ssize_t i = 0; i < r; i++) {
        if (buf[i] == '\n') {
            linebuf[linelen] = 0;
            handle_line(linebuf);
            linelen = 0;
        } else if (linelen < sizeof(linebuf) - 1) {
            linebuf[linelen++] = buf[i];
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIRMWARE.elf [--realtime|--max]\n", argv[0]);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--max") == 0) realtime = 0;
        if (strcmp(argv[i], "--realtime") == 0) realtime = 1;
    }
    elf_firmware_t fw;
    memset(&fw, 0, sizeof(fw));
    if (elf_read_firmware(argv[1], &fw) != 0) {
        fprintf(stderr, "rig_sim: cannot read firmware %s\n", argv[1]);
        return 1;
    }
    avr = avr_make_mcu_by_name("atmega328p");
    if (!avr) {
        fprintf(stderr, "rig_sim: simavr has no atmega328p\n");
        return 1;
    }
    avr_init(avr);
    avr->frequency = 16000000;
    avr_load_firmware(avr, &fw);
    avr->frequency = 16000000;
    relax_extint();

    for (size_t i = 0; i < sizeof(outputs) / sizeof(outputs[0]); i++) {
        avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ(outputs[i].port), outputs[i].bit),
                                pin_changed, (void *)&outputs[i]);
    }
    set_input("D2", 0);

    uart_pty_init(avr, &pty);
    uart_pty_connect(&pty, '0');
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    printf("PTY %s\n", pty.port[0].slavename);
    printf("READY\n");
    fflush(stdout);

    while (!go) poll_stdin(100);
    printf("RUN %llu\n", (unsigned long long)avr->cycle);
    fflush(stdout);

    const uint64_t poll_cycles = 4000; /* 250 us of AVR time */
    uint64_t next_poll = avr->cycle + poll_cycles;
    uint64_t t0_wall = wall_ns();
    uint64_t c0 = avr->cycle;
    int was_realtime = realtime;
    for (;;) {
        int state = avr_run(avr);
        if (state == cpu_Done || state == cpu_Crashed) finish(state == cpu_Done ? "done" : "crashed");
        if (avr->cycle < next_poll) continue;
        next_poll = avr->cycle + poll_cycles;
        fflush(stdout);
        poll_stdin(0);
        if (realtime != was_realtime) {
            was_realtime = realtime;
            t0_wall = wall_ns();
            c0 = avr->cycle;
        }
        if (realtime) {
            uint64_t sim_ns = (avr->cycle - c0) * 1000ull / 16ull;
            uint64_t w = wall_ns() - t0_wall;
            if (sim_ns > w + 200000ull) {
                struct timespec ts = {0, (long)(sim_ns - w)};
                nanosleep(&ts, NULL);
            } else if (w > sim_ns + 50000000ull) {
                /* Fell behind by > 50 ms (loaded machine): do not try to catch up in a burst. */
                t0_wall = wall_ns();
                c0 = avr->cycle;
            }
        }
    }
}
