// Native (host gcc) build of the firmware's protocol code, for golden-byte and fuzz tests.
//   proto_tool decode            stdin: raw byte stream -> stdout: one line "F <payload hex>" per
//                                valid frame, then "C frames bad_cobs bad_crc too_long too_short"
//   proto_tool encode <hex>      stdout: wire frame (CRC + COBS + 0x00) of the payload, as hex
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int main(int argc, char** argv) {
  if (argc >= 2 && strcmp(argv[1], "decode") == 0) {
    DbFrameReader r;
    r.reset();
    int c;
    while ((c = getchar()) != EOF) {
      int m = r.feed((uint8_t)c);
      if (m > 0) {
        printf("F ");
        for (int i = 0; i < m; i++) printf("%02x", r.frame[i]);
        printf("\n");
      }
    }
    printf("C %u %u %u %u %u\n", (unsigned)r.frames_ok, (unsigned)r.bad_cobs, (unsigned)r.bad_crc,
           (unsigned)r.too_long, (unsigned)r.too_short);
    return 0;
  }
  if (argc == 3 && strcmp(argv[1], "encode") == 0) {
    uint8_t payload[DB_MAX_PAYLOAD];
    size_t n = strlen(argv[2]) / 2;
    if (n > sizeof(payload)) return 2;
    for (size_t i = 0; i < n; i++) {
      int hi = hexval(argv[2][2 * i]), lo = hexval(argv[2][2 * i + 1]);
      if (hi < 0 || lo < 0) return 2;
      payload[i] = (uint8_t)(hi * 16 + lo);
    }
    uint8_t wire[DB_MAX_WIRE];
    size_t w = db_frame_build(payload, n, wire, sizeof(wire));
    if (w == 0) return 3;
    for (size_t i = 0; i < w; i++) printf("%02x", wire[i]);
    printf("\n");
    return 0;
  }
  fprintf(stderr, "usage: proto_tool decode | encode <payload hex>\n");
  return 2;
}
