// Wire protocol of the DeepBehavior rig firmware: COBS framing + CRC-16/CCITT-FALSE.
// Pure C++ (no Arduino headers) so it also compiles natively for fuzzing (firmware/native).
// The format is specified in firmware/PROTOCOL.md; rig/protocol.py is the host twin.
#ifndef DB_PROTOCOL_H
#define DB_PROTOCOL_H

#include <stdint.h>
#include <stddef.h>

#define DB_PROTOCOL_VERSION 2
#define DB_MAX_PAYLOAD 48            // decoded payload (type..crc) bytes
#define DB_MAX_WIRE (DB_MAX_PAYLOAD + DB_MAX_PAYLOAD / 254 + 2)

// Host -> firmware commands.
enum DbCommand : uint8_t {
  CMD_HELLO = 0x01,          // u8 protocol_version, u16 watchdog_ms
  CMD_PING = 0x02,           // -
  CMD_CONFIG = 0x03,         // 9 x u16 (see PROTOCOL.md)
  CMD_STATUS = 0x04,         // -  (ack data: status block)
  CMD_TRIGGER_START = 0x10,  // u32 rate_uhz, u32 max_pulses (0 = unlimited), u16 report_every
  CMD_TRIGGER_STOP = 0x11,   // -
  CMD_PLATFORM = 0x12,       // u8 up (1) / down (0)
  CMD_SERVO_US = 0x13,       // u16 target_us
  CMD_DISPENSE = 0x14,       // u8 pellets
  CMD_TTL_PULSE = 0x15,      // u16 width_us (0 = configured width)
  CMD_SYNC_LEVEL = 0x16,     // u8 level
  CMD_SYNC_PULSE = 0x17,     // u16 width_us
  CMD_REDELIVERY = 0x18,     // u8 enable
  CMD_RSYNC = 0x19,          // u16 min_ms (0 = off), u16 max_ms, u16 width_ms, u16 seed
  CMD_INPUTS = 0x1A,         // u8 frame_clock (report D8 rising edges), u8 loopback (report D12 edges)
};

// Firmware -> host replies and events.
enum DbReply : uint8_t {
  MSG_ACK = 0x80,             // u8 cmd_type, u16 cmd_seq, data...
  MSG_NAK = 0x81,             // u8 cmd_type, u16 cmd_seq, u8 code
  EV_BOOT = 0x90,             // u8 protocol_version, u8 reset_flags
  EV_IR = 0x91,               // u8 pellet_present
  EV_TRIGGER = 0x92,          // u32 pulse_index
  EV_TRIGGER_STOPPED = 0x93,  // u32 pulse_count
  EV_SERVO_DONE = 0x94,       // u16 position_us
  EV_DISPENSE_DONE = 0x95,    // u16 steps
  EV_TTL_FIRED = 0x96,        // u16 width_us, u16 cmd_seq
  EV_WATCHDOG = 0x97,         // -
  EV_REDELIVERY = 0x98,       // u8 phase
  EV_SYNC = 0x99,             // u8 level
  EV_RSYNC = 0x9A,            // u32 pulse_index (pseudo-random sync pulse on A0; t_us = rising edge)
  EV_FRAME_CLOCK = 0x9B,      // u32 edge_count (imaging frame clock on D8; t_us = rising edge)
  EV_LOOPBACK = 0x9C,         // u8 level, u32 edge_count (loopback input D12; t_us = the edge)
};

enum DbNakCode : uint8_t {
  NAK_UNKNOWN = 1,
  NAK_LENGTH = 2,
  NAK_VALUE = 3,
  NAK_BUSY = 4,
  NAK_VERSION = 5,
};

uint16_t db_crc16(const uint8_t* data, size_t len, uint16_t crc = 0xFFFF);

// COBS-encode `len` bytes into `out` (capacity >= len + len/254 + 1); returns bytes written
// (without the 0x00 delimiter).
size_t db_cobs_encode(const uint8_t* in, size_t len, uint8_t* out);

// Decode a COBS block (no delimiter) in place-safe manner; returns decoded length, or -1 if invalid.
int db_cobs_decode(const uint8_t* in, size_t len, uint8_t* out, size_t out_cap);

// Build a complete wire frame from a raw payload (type, seq, body): appends CRC, COBS-encodes and
// appends the 0x00 delimiter. Returns wire length, 0 if too long.
size_t db_frame_build(const uint8_t* payload, size_t len, uint8_t* wire, size_t wire_cap);

// Byte-at-a-time frame reader. feed() returns the payload length (without CRC, >= 3) when a
// complete valid frame ends at this byte (payload in `frame`), else 0.
struct DbFrameReader {
  uint8_t raw[DB_MAX_WIRE];
  uint8_t frame[DB_MAX_PAYLOAD];
  uint8_t n;
  bool overflow;
  uint32_t frames_ok;
  uint32_t bad_cobs;
  uint32_t bad_crc;
  uint32_t too_long;
  uint32_t too_short;

  void reset();
  int feed(uint8_t b);
};

static inline uint16_t db_get_u16(const uint8_t* p) { return (uint16_t)(p[0] | ((uint16_t)p[1] << 8)); }
static inline uint32_t db_get_u32(const uint8_t* p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline void db_put_u16(uint8_t* p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void db_put_u32(uint8_t* p, uint32_t v) {
  p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

#endif
