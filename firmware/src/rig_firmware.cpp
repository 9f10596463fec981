// DeepBehavior reaching-rig firmware for the Arduino Uno (ATmega328P, 16 MHz).
//
// Peripherals (all written here, no third-party libraries):
//   camera trigger  D9  (OC1A)  Timer1 fast PWM (mode 14, TOP = ICR1): hardware edges, 0.5 us steps
//   servo platform  D5  (PD5)   Timer2 CTC chained intervals (2 us resolution), 50 Hz frames
//   stepper         D3 step, D4 dir (non-blocking, from loop())
//   IR pellet       D2 input (HIGH = pellet present), edge time taken in the INT0 interrupt, debounced
//                   in loop()
// Between events loop() puts the CPU in idle sleep (timers, UART and INT0 keep running and wake it): a
// sleep only begins when no pulse, step, debounce or report is pending, so no timing depends on it.
//   sync TTL        D7   trial level / trigger copy or division / marks
//   closed-loop TTL D6   pulse of configured width on host command
//   pseudo-random sync A0 (PC0)  pulses at seeded random intervals (CMD_RSYNC), each one reported
//   imaging frame clock D8 (PB0) input: every rising edge timestamped in the pin-change interrupt and
//                   reported with a running count (CMD_INPUTS)
//   TTL loopback    D12 (PB4) input: the closed-loop TTL wired back by a jumper; both edges
//                   timestamped in the same interrupt (CMD_INPUTS), for rig check's latency test
// No other output is on PORTB: a read-modify-write of PORTB would clobber OC1A in simavr (not on silicon);
// D8 and D12 are inputs (nothing writes their PORTB bits once the trigger can run).
// Protocol: firmware/PROTOCOL.md (COBS + CRC-16, version handshake, sequence numbers, acks,
// host-silence watchdog -> safe state).
#include <Arduino.h>
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>

#include "protocol.h"

#ifndef DB_BAUD
#define DB_BAUD 1000000UL
#endif

static const uint8_t PIN_IR = 2;
static const uint8_t PIN_STEP = 3;
static const uint8_t PIN_DIR = 4;
static const uint8_t PIN_SYNC = 7;
static const uint8_t PIN_TTL = 6;
static const uint8_t PIN_TRIGGER = 9;
static const uint8_t PIN_SERVO = 5;
static const uint8_t PIN_FRAME_CLOCK = 8;
static const uint8_t PIN_LOOPBACK = 12;
static const uint8_t PIN_RSYNC = 14;

// ------------------------------------------------------------------ configuration (CMD_CONFIG)
struct Config {
  uint16_t servo_up_us = 1000;
  uint16_t servo_down_us = 2000;
  uint16_t servo_speed_us_per_s = 2000;  // 0 = jump
  uint16_t steps_per_pellet = 50;
  uint16_t step_rate_hz = 500;
  uint16_t ttl_width_us = 1000;
  uint16_t sync_div = 0;  // 0: sync line is a host-set level; N: pulse with every N-th trigger
  uint16_t debounce_ms = 5;
  uint16_t redelivery_delay_ms = 500;
};
static Config cfg;

// ------------------------------------------------------------------ transmit
static uint16_t tx_seq = 0;
static void ttl_update(uint32_t now);

static void send_msg(uint8_t type, uint32_t t_us, const uint8_t* body, uint8_t len) {
  uint8_t payload[DB_MAX_PAYLOAD];
  uint8_t wire[DB_MAX_WIRE];
  payload[0] = type;
  db_put_u16(payload + 1, tx_seq++);
  db_put_u32(payload + 3, t_us);
  for (uint8_t i = 0; i < len; i++) payload[7 + i] = body[i];
  size_t n = db_frame_build(payload, 7 + len, wire, sizeof(wire));
  Serial.write((uint8_t)0);  // leading delimiter: a frame after line noise still parses
  for (size_t i = 0; i < n; i++) {
    // Writing a frame takes a while (and Serial.write blocks when the TX buffer is full): keep
    // ending TTL pulses on time meanwhile.
    ttl_update(micros());
    Serial.write(wire[i]);
  }
}

static void send_event(uint8_t type, uint32_t t_us, const uint8_t* body, uint8_t len) {
  send_msg(type, t_us, body, len);
}

static void send_ack(uint8_t cmd, uint16_t cmd_seq, const uint8_t* data, uint8_t len) {
  uint8_t body[32];
  body[0] = cmd;
  db_put_u16(body + 1, cmd_seq);
  for (uint8_t i = 0; i < len && i < 29; i++) body[3 + i] = data[i];
  send_msg(MSG_ACK, micros(), body, 3 + len);
}

static void send_nak(uint8_t cmd, uint16_t cmd_seq, uint8_t code) {
  uint8_t body[4] = {cmd, (uint8_t)cmd_seq, (uint8_t)(cmd_seq >> 8), code};
  send_msg(MSG_NAK, micros(), body, 4);
}

// ------------------------------------------------------------------ camera trigger (Timer1)
// Fast PWM mode 14: the pin rises at BOTTOM and falls at OCR1A, period (ICR1 + 1) * prescaler / F_CPU.
// The edges are made by the timer hardware, so ISR latency never moves them. TIMER1_OVF fires at
// TOP, one timer tick before each rising edge: it counts pulses and timestamps them.
#define TRIG_RING 16
static volatile uint32_t trig_count = 0;       // rising edges produced since start
static volatile uint32_t trig_max = 0;         // 0 = unlimited
static volatile bool trig_running = false;
static volatile bool trig_stop_request = false;
static volatile uint8_t trig_head = 0;         // ring of (index, t_us) written by the ISR
static uint8_t trig_tail = 0;
static volatile uint32_t trig_ring_idx[TRIG_RING];
static volatile uint32_t trig_ring_t[TRIG_RING];
static volatile uint32_t trig_stopped_pending = 0;  // 1 + count when a stop must be reported
static volatile uint16_t sync_pulses_left = 0;
static uint16_t trig_report_every = 1;
static uint16_t sync_countdown = 0;    // trigger pulses until the next sync copy
static uint16_t report_countdown = 0;  // trigger pulses until the next TRIGGER event
static uint16_t trig_prescaler = 8;
static uint16_t trig_top = 0;

static void sync_write(bool level);

ISR(TIMER1_OVF_vect) {
  // At TOP: the next timer tick (BOTTOM) makes the rising edge of pulse `trig_count`.
  // Countdowns, not `idx % n`: a 32-bit division would take ~40 us here.
  if (cfg.sync_div) {
    if (sync_countdown == 0) {
      PORTD |= _BV(PD7);
      sync_pulses_left = 1;
      sync_countdown = cfg.sync_div;
    }
    sync_countdown--;
  }
  uint32_t idx = trig_count++;
  if (trig_report_every) {
    if (report_countdown == 0) {
      uint8_t h = trig_head;
      trig_ring_idx[h] = idx;
      trig_ring_t[h] = micros();
      trig_head = (h + 1) % TRIG_RING;
      report_countdown = trig_report_every;
    }
    report_countdown--;
  }
}

ISR(TIMER1_COMPA_vect) {
  // Falling edge of a trigger pulse: end a sync copy pulse; stop here (mid-period) so the last
  // pulse is whole and no partial pulse follows.
  if (sync_pulses_left) {
    PORTD &= ~_BV(PD7);
    sync_pulses_left = 0;
  }
  if (!(TCCR1A & _BV(COM1A1))) {
    TCCR1A = _BV(COM1A1) | _BV(WGM11);
    return;
  }
  if (trig_count && (trig_stop_request || (trig_max && trig_count >= trig_max))) {
    TCCR1B = 0;
    TCCR1A = 0;
    PORTB &= ~_BV(PB1);
    TIMSK1 = 0;
    trig_running = false;
    trig_stop_request = false;
    trig_stopped_pending = trig_count + 1;
  }
}

// Choose prescaler and TOP for `rate_uhz`; returns achieved rate in uHz (0 if impossible).
static uint32_t trigger_plan(uint32_t rate_uhz, uint16_t* presc, uint16_t* top) {
  static const uint16_t prescalers[] = {1, 8, 64, 256, 1024};
  for (uint8_t i = 0; i < 5; i++) {
    // ticks = F_CPU / (presc * rate) rounded; computed in uHz units with 64-bit math.
    uint64_t num = (uint64_t)F_CPU * 1000000ULL;
    uint64_t den = (uint64_t)prescalers[i] * rate_uhz;
    if (den == 0) return 0;
    uint64_t ticks = (num + den / 2) / den;
    if (ticks >= 4 && ticks <= 65536ULL) {
      *presc = prescalers[i];
      *top = (uint16_t)(ticks - 1);
      return (uint32_t)((num / prescalers[i] + ticks / 2) / ticks);
    }
  }
  return 0;
}

static void trigger_start(uint16_t presc, uint16_t top, uint32_t max_pulses) {
  uint8_t cs = presc == 1 ? 1 : presc == 8 ? 2 : presc == 64 ? 3 : presc == 256 ? 4 : 5;
  noInterrupts();
  TCCR1B = 0;
  TCCR1A = 0;
  trig_count = 0;
  trig_max = max_pulses;
  trig_stop_request = false;
  trig_head = 0;
  trig_tail = 0;
  sync_countdown = 0;
  report_countdown = 0;
  ICR1 = top;
  OCR1A = top / 2;  // 50 % square wave
  TCNT1 = 0;        // OC1A is connected at the first compare match (mid-period, pin low), so
  TIFR1 = 0xFF;     // the first pulse rises at the first TOP -> BOTTOM, right after the first TOV
  TIMSK1 = _BV(TOIE1) | _BV(OCIE1A);
  TCCR1A = _BV(WGM11);
  trig_running = true;
  TCCR1B = _BV(WGM13) | _BV(WGM12) | cs;
  interrupts();
}

static void trigger_stop_now() {
  noInterrupts();
  if (trig_running) {
    TCCR1A = 0;
    TCCR1B = 0;
    TIMSK1 = 0;
    PORTB &= ~_BV(PB1);
    trig_running = false;
    trig_stopped_pending = trig_count + 1;
  }
  interrupts();
}

// ------------------------------------------------------------------ servo (Timer2)
// A 20 ms frame is a chain of CTC intervals of at most 256 ticks (2 us each at prescaler 32).
// The ISR changes the pin at interval boundaries, which the hardware times exactly.
static volatile uint16_t servo_pulse_ticks = 0;  // current pulse width in 2 us ticks (0 = off)
static volatile uint16_t servo_left = 0;         // ticks left in the current phase
static volatile bool servo_high = false;
static volatile uint8_t servo_frames = 0;        // frames completed (for speed stepping)
static const uint16_t SERVO_FRAME_TICKS = 10000; // 20 ms
static uint16_t servo_pos_us = 0;                // commanded current position
static uint16_t servo_target_us = 0;
static bool servo_moving = false;
static uint8_t servo_frames_seen = 0;

static void servo_load_next(uint16_t left) {
  uint16_t chunk = left > 256 ? 256 : left;
  if (left > 256 && left - 256 < 16) chunk = left - 16;  // never leave a tiny last interval
  OCR2A = (uint8_t)(chunk - 1);
  servo_left = left - chunk;
}

ISR(TIMER2_COMPA_vect) {
  if (servo_left) {
    servo_load_next(servo_left);
    return;
  }
  if (servo_high) {
    PORTD &= ~_BV(PD5);
    servo_high = false;
    uint16_t w = servo_pulse_ticks ? servo_pulse_ticks : 1000;
    servo_load_next(SERVO_FRAME_TICKS - w);
  } else {
    servo_frames++;
    uint16_t w = servo_pulse_ticks;
    if (w) {
      PORTD |= _BV(PD5);
      servo_high = true;
      servo_load_next(w);
    } else {
      servo_load_next(SERVO_FRAME_TICKS);
    }
  }
}

static void servo_init() {
  TCCR2A = _BV(WGM21);  // CTC, TOP = OCR2A
  TCCR2B = _BV(CS21) | _BV(CS20);  // prescaler 32 -> 2 us
  OCR2A = 255;
  TCNT2 = 0;
  servo_left = 0;
  TIMSK2 = _BV(OCIE2A);
}

static void servo_set_width(uint16_t us) {
  uint16_t ticks = us / 2;
  noInterrupts();
  servo_pulse_ticks = ticks;
  interrupts();
}

static void servo_move(uint16_t target_us) {
  if (target_us < 400) target_us = 400;
  if (target_us > 2600) target_us = 2600;
  servo_target_us = target_us;
  if (servo_pos_us == 0 || cfg.servo_speed_us_per_s == 0) servo_pos_us = target_us;
  servo_set_width(servo_pos_us);
  servo_moving = true;
  servo_frames_seen = servo_frames;
}

static void servo_update(uint32_t now_us) {
  uint8_t f = servo_frames;
  if (f == servo_frames_seen) return;
  uint8_t frames = (uint8_t)(f - servo_frames_seen);
  servo_frames_seen = f;
  if (!servo_moving) return;
  if (servo_pos_us == servo_target_us) {
    // The target width has been output for at least one full frame: done.
    servo_moving = false;
    uint8_t body[2];
    db_put_u16(body, servo_pos_us);
    send_event(EV_SERVO_DONE, now_us, body, 2);
    return;
  }
  uint32_t step = (uint32_t)cfg.servo_speed_us_per_s * 20UL * frames / 1000UL;
  if (step == 0) step = 1;
  if (servo_pos_us < servo_target_us) {
    servo_pos_us = (servo_target_us - servo_pos_us <= step) ? servo_target_us : servo_pos_us + step;
  } else {
    servo_pos_us = (servo_pos_us - servo_target_us <= step) ? servo_target_us : servo_pos_us - step;
  }
  servo_set_width(servo_pos_us);
}

// ------------------------------------------------------------------ stepper (loop)
static uint16_t step_left = 0;
static uint16_t step_done = 0;
static uint32_t step_next_us = 0;
static bool step_active = false;

static void stepper_start(uint16_t steps) {
  digitalWrite(PIN_DIR, HIGH);
  step_left = steps;
  step_done = 0;
  step_active = steps > 0;
  step_next_us = micros();
}

static void stepper_update(uint32_t now) {
  if (!step_active) return;
  if ((int32_t)(now - step_next_us) < 0) return;
  PORTD |= _BV(PD3);
  delayMicroseconds(4);
  PORTD &= ~_BV(PD3);
  step_done++;
  step_left--;
  uint32_t period = 1000000UL / (cfg.step_rate_hz ? cfg.step_rate_hz : 1);
  step_next_us += period;
  if (step_left == 0) {
    step_active = false;
    uint8_t body[2];
    db_put_u16(body, step_done);
    send_event(EV_DISPENSE_DONE, micros(), body, 2);
  }
}

// ------------------------------------------------------------------ TTL outputs
static bool ttl_high = false;
static uint32_t ttl_off_us = 0;
static bool sync_mark = false;
static uint32_t sync_off_us = 0;
static bool sync_level = false;

static void sync_write(bool level) {
  if (level) PORTD |= _BV(PD7); else PORTD &= ~_BV(PD7);
}

static void ttl_update(uint32_t now) {
  if (ttl_high && (int32_t)(now - ttl_off_us) >= 0) {
    PORTD &= ~_BV(PD6);
    ttl_high = false;
  }
  if (sync_mark && (int32_t)(now - sync_off_us) >= 0) {
    sync_write(sync_level);
    sync_mark = false;
  }
}

// ------------------------------------------------------------------ pseudo-random sync (A0)
// pyControl's Rsync idea: pulses at intervals drawn uniformly from [min_ms, max_ms] (xorshift32), so any
// few consecutive intervals identify their place in the session; every rising edge is reported (EV_RSYNC)
// with its micros(), the imaging system records the same edges on its own clock. Timed in loop() (the
// rising edge may be up to ~1 ms after its plan, but the reported time is the pin's).
static bool rs_on = false;
static bool rs_high = false;
static uint16_t rs_min_ms = 0, rs_max_ms = 0, rs_width_ms = 0, rs_seed = 0;
static uint32_t rs_rand = 1;
static uint32_t rs_index = 0;
static uint32_t rs_next_us = 0;
static uint32_t rs_off_us = 0;

static uint32_t rsync_interval_us() {
  uint32_t x = rs_rand;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  rs_rand = x;
  uint32_t span = (uint32_t)(rs_max_ms - rs_min_ms) + 1;
  return ((uint32_t)rs_min_ms + x % span) * 1000UL;
}

static void rsync_off() {
  rs_on = false;
  rs_high = false;
  PORTC &= ~_BV(PC0);
}

static void rsync_update(uint32_t now) {
  if (!rs_on) return;
  if (rs_high) {
    if ((int32_t)(now - rs_off_us) >= 0) {
      PORTC &= ~_BV(PC0);
      rs_high = false;
    }
    return;
  }
  if ((int32_t)(now - rs_next_us) < 0) return;
  PORTC |= _BV(PC0);  // the output first, then the bookkeeping
  uint32_t t = micros();
  rs_high = true;
  rs_off_us = t + (uint32_t)rs_width_ms * 1000UL;
  rs_next_us = t + rsync_interval_us();
  uint8_t body[4];
  db_put_u32(body, rs_index++);
  send_event(EV_RSYNC, t, body, 4);
}

// ------------------------------------------------------------------ timestamped inputs (D8, D12)
// One pin-change interrupt (PCINT0, port B) timestamps both inputs: the imaging system's frame clock on D8
// (rising edges) and the closed-loop TTL's loopback on D12 (both edges). Each edge gets a running count
// (from 0 when the input is enabled): a report lost to a full ring shows as a gap in the counts.
#define EDGE_RING 16
static volatile uint8_t in_enabled = 0;  // bit 0 frame clock, bit 1 loopback
static volatile uint8_t in_last = 0;     // PINB at the last interrupt
static volatile uint32_t fc_count = 0;   // frame-clock rising edges since enabled
static volatile uint32_t lb_count = 0;   // loopback edges since enabled
static volatile uint8_t edge_head = 0;   // ring of (kind, count, t_us) written by the ISR
static volatile uint8_t edge_tail = 0;
static volatile uint8_t edge_kind[EDGE_RING];  // 1 frame clock; 2 loopback fell; 3 loopback rose
static volatile uint32_t edge_count[EDGE_RING];
static volatile uint32_t edge_t[EDGE_RING];

static inline void edge_push(uint8_t kind, uint32_t count, uint32_t t) {
  uint8_t h = edge_head;
  uint8_t next = (uint8_t)((h + 1) % EDGE_RING);
  if (next == edge_tail) return;  // full: the report is lost, its count is not
  edge_kind[h] = kind;
  edge_count[h] = count;
  edge_t[h] = t;
  edge_head = next;
}

ISR(PCINT0_vect) {
  uint32_t t = micros();
  uint8_t now = PINB;
  uint8_t changed = now ^ in_last;
  in_last = now;
  uint8_t en = in_enabled;
  if ((en & 1) && (changed & _BV(PB0)) && (now & _BV(PB0))) edge_push(1, fc_count++, t);
  if ((en & 2) && (changed & _BV(PB4))) edge_push((now & _BV(PB4)) ? 3 : 2, lb_count++, t);
}

static void inputs_set(uint8_t en) {
  noInterrupts();
  uint8_t was = in_enabled;
  if ((en & 1) && !(was & 1)) fc_count = 0;
  if ((en & 2) && !(was & 2)) lb_count = 0;
  in_last = PINB;
  in_enabled = en;
  PCMSK0 = (uint8_t)(((en & 1) ? _BV(PCINT0) : 0) | ((en & 2) ? _BV(PCINT4) : 0));
  PCIFR = _BV(PCIF0);
  PCICR = (uint8_t)(en ? (PCICR | _BV(PCIE0)) : (PCICR & ~_BV(PCIE0)));
  interrupts();
}

static void inputs_report() {
  while (edge_tail != edge_head) {
    uint8_t i = edge_tail;
    uint8_t kind = edge_kind[i];
    uint32_t count = edge_count[i];
    uint32_t t = edge_t[i];
    edge_tail = (uint8_t)((i + 1) % EDGE_RING);
    uint8_t body[5];
    if (kind == 1) {
      db_put_u32(body, count);
      send_event(EV_FRAME_CLOCK, t, body, 4);
    } else {
      body[0] = (uint8_t)(kind - 2);
      db_put_u32(body + 1, count);
      send_event(EV_LOOPBACK, t, body, 5);
    }
  }
}

// ------------------------------------------------------------------ IR sensor
static bool ir_state = false;       // debounced: pellet present
static bool ir_raw_last = false;
static uint32_t ir_raw_change_us = 0;
static uint32_t ir_raw_change_ms = 0;
static bool ir_pending = false;
static bool ir_removed_flag = false;  // set on present -> removed, consumed by re-delivery

static volatile uint32_t ir_edge_us = 0;  // time of the last edge on D2, taken in the INT0 interrupt
static volatile bool ir_edge = false;

ISR(INT0_vect) {
  ir_edge_us = micros();
  ir_edge = true;
}

static void ir_update(uint32_t now_us) {
  bool raw = digitalRead(PIN_IR) == HIGH;
  uint32_t now_ms = millis();
  if (raw != ir_raw_last) {
    ir_raw_last = raw;
    noInterrupts();
    ir_raw_change_us = ir_edge ? ir_edge_us : now_us;
    ir_edge = false;
    interrupts();
    ir_raw_change_ms = now_ms;
    ir_pending = raw != ir_state;
  }
  if (ir_pending && (now_ms - ir_raw_change_ms) >= cfg.debounce_ms) {
    ir_pending = false;
    if (raw != ir_state) {
      ir_state = raw;
      if (!raw) ir_removed_flag = true;
      uint8_t body[1] = {(uint8_t)raw};
      send_event(EV_IR, ir_raw_change_us, body, 1);
    }
  }
}

// ------------------------------------------------------------------ automatic re-delivery
enum RedeliveryPhase : uint8_t { RD_IDLE = 0, RD_LOWERING = 1, RD_DISPENSING = 2, RD_RAISING = 3, RD_DONE = 4 };
static bool redelivery_enabled = false;
static uint8_t rd_phase = RD_IDLE;
static uint32_t rd_since_ms = 0;
static bool rd_waiting_delay = false;

static void rd_event(uint8_t phase) {
  uint8_t body[1] = {phase};
  send_event(EV_REDELIVERY, micros(), body, 1);
}

static void redelivery_update() {
  if (!redelivery_enabled) {
    rd_phase = RD_IDLE;
    rd_waiting_delay = false;
    return;
  }
  switch (rd_phase) {
    case RD_IDLE:
      if (ir_removed_flag) {
        ir_removed_flag = false;
        rd_waiting_delay = true;
        rd_since_ms = millis();
        rd_phase = RD_LOWERING;
      }
      break;
    case RD_LOWERING:
      if (rd_waiting_delay) {
        if (millis() - rd_since_ms < cfg.redelivery_delay_ms) break;
        rd_waiting_delay = false;
        rd_event(RD_LOWERING);
        servo_move(cfg.servo_down_us);
      } else if (!servo_moving) {
        rd_phase = RD_DISPENSING;
        rd_event(RD_DISPENSING);
        stepper_start(cfg.steps_per_pellet);
      }
      break;
    case RD_DISPENSING:
      if (!step_active) {
        rd_phase = RD_RAISING;
        rd_event(RD_RAISING);
        servo_move(cfg.servo_up_us);
      }
      break;
    case RD_RAISING:
      if (!servo_moving) {
        rd_phase = RD_IDLE;
        ir_removed_flag = false;
        rd_event(RD_DONE);
      }
      break;
  }
}

// ------------------------------------------------------------------ watchdog / safe state
static uint16_t watchdog_ms = 0;  // 0 = off (armed by HELLO)
static uint32_t last_rx_ms = 0;
static bool safe_state = false;

static void enter_safe_state() {
  trigger_stop_now();
  PORTD &= ~_BV(PD6);
  ttl_high = false;
  sync_level = false;
  sync_mark = false;
  sync_write(false);
  step_active = false;
  step_left = 0;
  redelivery_enabled = false;
  rsync_off();
  servo_move(cfg.servo_down_us);
  safe_state = true;
  send_event(EV_WATCHDOG, micros(), nullptr, 0);
}

// ------------------------------------------------------------------ command dispatch
static void handle_command(const uint8_t* f, uint8_t len) {
  uint8_t type = f[0];
  uint16_t seq = db_get_u16(f + 1);
  const uint8_t* b = f + 3;
  uint8_t n = len - 3;
  last_rx_ms = millis();
  safe_state = false;
#define NEED(k)                          \
  if (n != (k)) {                        \
    send_nak(type, seq, NAK_LENGTH);     \
    return;                              \
  }
  switch (type) {
    case CMD_HELLO: {
      NEED(3);
      if (b[0] != DB_PROTOCOL_VERSION) {
        uint8_t body[5] = {type, (uint8_t)seq, (uint8_t)(seq >> 8), NAK_VERSION, DB_PROTOCOL_VERSION};
        send_msg(MSG_NAK, micros(), body, 5);
        return;
      }
      watchdog_ms = db_get_u16(b + 1);
      uint8_t d[4] = {DB_PROTOCOL_VERSION, 0, 0, 0};
      db_put_u16(d + 1, (uint16_t)(F_CPU / 1000000UL));
      d[3] = (uint8_t)ir_state;
      send_ack(type, seq, d, 4);
      return;
    }
    case CMD_PING:
      NEED(0);
      send_ack(type, seq, nullptr, 0);
      return;
    case CMD_CONFIG: {
      NEED(18);
      Config c;
      c.servo_up_us = db_get_u16(b + 0);
      c.servo_down_us = db_get_u16(b + 2);
      c.servo_speed_us_per_s = db_get_u16(b + 4);
      c.steps_per_pellet = db_get_u16(b + 6);
      c.step_rate_hz = db_get_u16(b + 8);
      c.ttl_width_us = db_get_u16(b + 10);
      c.sync_div = db_get_u16(b + 12);
      c.debounce_ms = db_get_u16(b + 14);
      c.redelivery_delay_ms = db_get_u16(b + 16);
      if (c.servo_up_us < 400 || c.servo_up_us > 2600 || c.servo_down_us < 400 || c.servo_down_us > 2600 ||
          c.step_rate_hz == 0 || c.step_rate_hz > 5000 || c.ttl_width_us == 0 || c.ttl_width_us > 60000) {
        send_nak(type, seq, NAK_VALUE);
        return;
      }
      cfg = c;
      send_ack(type, seq, nullptr, 0);
      return;
    }
    case CMD_STATUS: {
      NEED(0);
      uint8_t d[16];
      noInterrupts();
      uint32_t count = trig_count;
      interrupts();
      d[0] = (uint8_t)ir_state;
      d[1] = (uint8_t)((trig_running ? 1 : 0) | (servo_moving ? 2 : 0) | (step_active ? 4 : 0) |
                       (redelivery_enabled ? 8 : 0) | (safe_state ? 16 : 0));
      db_put_u16(d + 2, servo_pos_us);
      db_put_u32(d + 4, count);
      extern DbFrameReader rx;
      db_put_u32(d + 8, rx.bad_crc + rx.bad_cobs + rx.too_long + rx.too_short);
      db_put_u32(d + 12, rx.frames_ok);
      send_ack(type, seq, d, 16);
      return;
    }
    case CMD_TRIGGER_START: {
      NEED(10);
      if (trig_running) {
        send_nak(type, seq, NAK_BUSY);
        return;
      }
      uint16_t presc, top;
      uint32_t achieved = trigger_plan(db_get_u32(b), &presc, &top);
      if (!achieved) {
        send_nak(type, seq, NAK_VALUE);
        return;
      }
      trig_report_every = db_get_u16(b + 8);
      trig_prescaler = presc;
      trig_top = top;
      uint8_t d[8];
      db_put_u32(d, achieved);
      db_put_u16(d + 4, presc);
      db_put_u16(d + 6, top);
      send_ack(type, seq, d, 8);
      Serial.flush();
      trigger_start(presc, top, db_get_u32(b + 4));
      return;
    }
    case CMD_TRIGGER_STOP:
      NEED(0);
      if (trig_running) trig_stop_request = true;
      send_ack(type, seq, nullptr, 0);
      return;
    case CMD_PLATFORM:
      NEED(1);
      if (b[0] > 1) {
        send_nak(type, seq, NAK_VALUE);
        return;
      }
      servo_move(b[0] ? cfg.servo_up_us : cfg.servo_down_us);
      send_ack(type, seq, nullptr, 0);
      return;
    case CMD_SERVO_US: {
      NEED(2);
      uint16_t us = db_get_u16(b);
      if (us < 400 || us > 2600) {
        send_nak(type, seq, NAK_VALUE);
        return;
      }
      servo_move(us);
      send_ack(type, seq, nullptr, 0);
      return;
    }
    case CMD_DISPENSE:
      NEED(1);
      if (step_active) {
        send_nak(type, seq, NAK_BUSY);
        return;
      }
      if (b[0] == 0 || b[0] > 10) {
        send_nak(type, seq, NAK_VALUE);
        return;
      }
      stepper_start((uint16_t)(cfg.steps_per_pellet * b[0]));
      send_ack(type, seq, nullptr, 0);
      return;
    case CMD_TTL_PULSE: {
      NEED(2);
      uint16_t w = db_get_u16(b);
      if (w == 0) w = cfg.ttl_width_us;
      PORTD |= _BV(PD6);  // the output first, then the bookkeeping
      uint32_t t = micros();
      ttl_high = true;
      ttl_off_us = t + w;
      send_ack(type, seq, nullptr, 0);
      uint8_t body[4];
      db_put_u16(body, w);
      db_put_u16(body + 2, seq);
      send_event(EV_TTL_FIRED, t, body, 4);
      return;
    }
    case CMD_SYNC_LEVEL:
      NEED(1);
      if (cfg.sync_div) {
        send_nak(type, seq, NAK_BUSY);
        return;
      }
      sync_level = b[0] != 0;
      if (!sync_mark) sync_write(sync_level);
      send_ack(type, seq, nullptr, 0);
      {
        uint8_t body[1] = {(uint8_t)sync_level};
        send_event(EV_SYNC, micros(), body, 1);
      }
      return;
    case CMD_SYNC_PULSE: {
      NEED(2);
      if (cfg.sync_div) {
        send_nak(type, seq, NAK_BUSY);
        return;
      }
      uint16_t w = db_get_u16(b);
      sync_write(!sync_level);
      uint32_t t = micros();
      sync_mark = true;
      sync_off_us = t + (w ? w : cfg.ttl_width_us);
      send_ack(type, seq, nullptr, 0);
      return;
    }
    case CMD_REDELIVERY:
      NEED(1);
      redelivery_enabled = b[0] != 0;
      ir_removed_flag = false;
      send_ack(type, seq, nullptr, 0);
      return;
    case CMD_RSYNC: {
      NEED(8);
      uint16_t lo = db_get_u16(b), hi = db_get_u16(b + 2), w = db_get_u16(b + 4), seed = db_get_u16(b + 6);
      if (lo == 0) {
        rsync_off();
        send_ack(type, seq, nullptr, 0);
        return;
      }
      if (hi < lo || w == 0 || w >= lo) {
        send_nak(type, seq, NAK_VALUE);
        return;
      }
      // the same settings again (a host reconnecting) keep the running sequence: no repeated pattern
      if (!(rs_on && lo == rs_min_ms && hi == rs_max_ms && w == rs_width_ms && seed == rs_seed)) {
        rs_min_ms = lo;
        rs_max_ms = hi;
        rs_width_ms = w;
        rs_seed = seed;
        rs_rand = 0x9E3779B9UL ^ (seed ? (uint32_t)seed : micros());
        if (!rs_rand) rs_rand = 1;
        rs_index = 0;
        rs_high = false;
        PORTC &= ~_BV(PC0);
        rs_next_us = micros() + rsync_interval_us();
        rs_on = true;
      }
      send_ack(type, seq, nullptr, 0);
      return;
    }
    case CMD_INPUTS:
      NEED(2);
      if (b[0] > 1 || b[1] > 1) {
        send_nak(type, seq, NAK_VALUE);
        return;
      }
      inputs_set((uint8_t)(b[0] | (b[1] << 1)));
      send_ack(type, seq, nullptr, 0);
      return;
    default:
      send_nak(type, seq, NAK_UNKNOWN);
      return;
  }
#undef NEED
}

// ------------------------------------------------------------------ main
DbFrameReader rx;

// Idle sleep until the next interrupt (Timer0's millis tick at the latest, every 1.024 ms), but only when
// nothing in loop() is timing something: the polled edges (TTL end, sync mark end, stepper steps) and the
// debounce never wait on a wake-up. Interrupts are off while deciding; SEI then SLEEP is atomic on AVR,
// so an interrupt that arrives meanwhile wakes the CPU at once.
static void idle_sleep() {
  noInterrupts();
  bool busy = ttl_high || sync_mark || rs_high || step_active || ir_pending || ir_edge ||
              Serial.available() > 0 || trig_tail != trig_head || trig_stopped_pending || edge_tail != edge_head;
  if (busy) {
    interrupts();
    return;
  }
  sleep_enable();
  interrupts();
  sleep_cpu();
  sleep_disable();
}

void setup() {
  pinMode(PIN_IR, INPUT);
  pinMode(PIN_STEP, OUTPUT);
  pinMode(PIN_DIR, OUTPUT);
  pinMode(PIN_SYNC, OUTPUT);
  pinMode(PIN_TTL, OUTPUT);
  pinMode(PIN_TRIGGER, OUTPUT);
  pinMode(PIN_SERVO, OUTPUT);
  pinMode(PIN_FRAME_CLOCK, INPUT);
  pinMode(PIN_LOOPBACK, INPUT);
  pinMode(PIN_RSYNC, OUTPUT);
  digitalWrite(PIN_RSYNC, LOW);
  digitalWrite(PIN_TRIGGER, LOW);
  digitalWrite(PIN_TTL, LOW);
  digitalWrite(PIN_SYNC, LOW);
  rx.reset();
  uint8_t reset_flags = MCUSR;
  MCUSR = 0;
  Serial.begin(DB_BAUD);
  servo_init();
  servo_move(cfg.servo_down_us);
  ir_raw_last = ir_state = digitalRead(PIN_IR) == HIGH;
  EICRA = (EICRA & ~(_BV(ISC01) | _BV(ISC00))) | _BV(ISC00);  // INT0 on any change of D2
  EIFR = _BV(INTF0);
  EIMSK |= _BV(INT0);
  set_sleep_mode(SLEEP_MODE_IDLE);
  uint8_t body[2] = {DB_PROTOCOL_VERSION, reset_flags};
  send_event(EV_BOOT, micros(), body, 2);
}

void loop() {
  while (Serial.available() > 0) {
    int m = rx.feed((uint8_t)Serial.read());
    if (m > 0) handle_command(rx.frame, (uint8_t)m);
  }
  uint32_t now = micros();
  // Trigger pulses recorded by the ISR.
  while (trig_tail != trig_head) {
    uint8_t body[4];
    db_put_u32(body, trig_ring_idx[trig_tail]);
    uint32_t t = trig_ring_t[trig_tail];
    trig_tail = (trig_tail + 1) % TRIG_RING;
    send_event(EV_TRIGGER, t, body, 4);
  }
  if (trig_stopped_pending) {
    noInterrupts();
    uint32_t c = trig_stopped_pending - 1;
    trig_stopped_pending = 0;
    interrupts();
    uint8_t body[4];
    db_put_u32(body, c);
    send_event(EV_TRIGGER_STOPPED, micros(), body, 4);
  }
  inputs_report();
  rsync_update(now);
  ir_update(now);
  servo_update(now);
  stepper_update(now);
  ttl_update(now);
  redelivery_update();
  if (watchdog_ms && !safe_state && (millis() - last_rx_ms) > watchdog_ms) enter_safe_state();
  idle_sleep();
}
