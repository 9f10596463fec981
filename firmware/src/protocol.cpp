// See protocol.h and firmware/PROTOCOL.md.
#include "protocol.h"

uint16_t db_crc16(const uint8_t* data, size_t len, uint16_t crc) {
  // CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor; a nibble at a time
  // (16-entry table: 4x faster than bitwise on the AVR for 32 bytes of flash).
  static const uint16_t table[16] = {0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50A5, 0x60C6, 0x70E7,
                                     0x8108, 0x9129, 0xA14A, 0xB16B, 0xC18C, 0xD1AD, 0xE1CE, 0xF1EF};
  for (size_t i = 0; i < len; i++) {
    crc = (uint16_t)((crc << 4) ^ table[(uint8_t)((crc >> 12) ^ (data[i] >> 4))]);
    crc = (uint16_t)((crc << 4) ^ table[(uint8_t)((crc >> 12) ^ (data[i] & 0x0F))]);
  }
  return crc;
}

size_t db_cobs_encode(const uint8_t* in, size_t len, uint8_t* out) {
  size_t code_at = 0, o = 1;
  uint8_t code = 1;
  for (size_t i = 0; i < len; i++) {
    if (in[i] == 0) {
      out[code_at] = code;
      code_at = o++;
      code = 1;
    } else {
      out[o++] = in[i];
      if (++code == 0xFF) {
        out[code_at] = code;
        code_at = o++;
        code = 1;
      }
    }
  }
  out[code_at] = code;
  return o;
}

int db_cobs_decode(const uint8_t* in, size_t len, uint8_t* out, size_t out_cap) {
  size_t i = 0, o = 0;
  while (i < len) {
    uint8_t code = in[i++];
    if (code == 0) return -1;
    for (uint8_t k = 1; k < code; k++) {
      if (i >= len || in[i] == 0 || o >= out_cap) return -1;
      out[o++] = in[i++];
    }
    if (code != 0xFF && i < len) {
      if (o >= out_cap) return -1;
      out[o++] = 0;
    }
  }
  return (int)o;
}

size_t db_frame_build(const uint8_t* payload, size_t len, uint8_t* wire, size_t wire_cap) {
  uint8_t tmp[DB_MAX_PAYLOAD];
  if (len + 2 > DB_MAX_PAYLOAD || wire_cap < len + 2 + (len + 2) / 254 + 2) return 0;
  for (size_t i = 0; i < len; i++) tmp[i] = payload[i];
  uint16_t crc = db_crc16(payload, len);
  db_put_u16(tmp + len, crc);
  size_t n = db_cobs_encode(tmp, len + 2, wire);
  wire[n++] = 0;
  return n;
}

void DbFrameReader::reset() {
  n = 0;
  overflow = false;
  frames_ok = bad_cobs = bad_crc = too_long = too_short = 0;
}

int DbFrameReader::feed(uint8_t b) {
  if (b != 0) {
    if (n < sizeof(raw)) {
      raw[n++] = b;
    } else {
      overflow = true;
    }
    return 0;
  }
  // Delimiter: a frame (or garbage) ends here.
  uint8_t len = n;
  bool was_overflow = overflow;
  n = 0;
  overflow = false;
  if (len == 0) return 0;  // empty frame: idle delimiter, not an error
  if (was_overflow) {
    too_long++;
    return 0;
  }
  int m = db_cobs_decode(raw, len, frame, sizeof(frame));
  if (m < 0) {
    bad_cobs++;
    return 0;
  }
  if (m < 5) {  // type + seq + crc
    too_short++;
    return 0;
  }
  uint16_t crc = db_get_u16(frame + m - 2);
  if (db_crc16(frame, (size_t)(m - 2)) != crc) {
    bad_crc++;
    return 0;
  }
  frames_ok++;
  return m - 2;
}
