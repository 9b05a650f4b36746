"""cffi declarations of the kernel QUIC socket ABI, shipped with pyquic.

Written by the project from the ABI facts of the in-kernel QUIC module (x86_64
and every other Linux ABI where the fixed-width types keep their natural
alignment). It is the last fallback of ``build_ffi.find_header()`` and what
``pyquic.abi`` declares in cffi's in-line ABI mode, so importing pyquic never
needs the kernel header, the module, libquic or a compiler.

The text is in the form ``build_ffi.generate_cdef()`` produces: integer
``#define`` constants, enums with plain integer values (the ``MSG_*`` flag
aliases already resolved) and the structs and union with ``<stdint.h>`` types.
"""

from __future__ import annotations

CDEF: str = """\
#define SOL_QUIC 288
#define QUIC_STREAM_TYPE_SERVER_MASK 1
#define QUIC_STREAM_TYPE_UNI_MASK 2
#define QUIC_STREAM_TYPE_MASK 3
#define QUIC_SOCKOPT_EVENT 0
#define QUIC_SOCKOPT_STREAM_OPEN 1
#define QUIC_SOCKOPT_STREAM_RESET 2
#define QUIC_SOCKOPT_STREAM_STOP_SENDING 3
#define QUIC_SOCKOPT_CONNECTION_ID 4
#define QUIC_SOCKOPT_CONNECTION_CLOSE 5
#define QUIC_SOCKOPT_CONNECTION_MIGRATION 6
#define QUIC_SOCKOPT_KEY_UPDATE 7
#define QUIC_SOCKOPT_TRANSPORT_PARAM 8
#define QUIC_SOCKOPT_CONFIG 9
#define QUIC_SOCKOPT_TOKEN 10
#define QUIC_SOCKOPT_ALPN 11
#define QUIC_SOCKOPT_SESSION_TICKET 12
#define QUIC_SOCKOPT_CRYPTO_SECRET 13
#define QUIC_SOCKOPT_TRANSPORT_PARAM_EXT 14
#define QUIC_VERSION_V1 1
#define QUIC_VERSION_V2 1798521807
#define QUIC_CRYPTO_SECRET_BUFFER_SIZE 48
#define QUIC_CLOSE_PHRASE_BUFFER_SIZE 64

enum {
    IPPROTO_QUIC = 261,
};

enum quic_cmsg_type {
    QUIC_STREAM_INFO = 0,
    QUIC_HANDSHAKE_INFO = 1,
};

enum quic_msg_flags {
    MSG_QUIC_STREAM_NEW = 1024,
    MSG_QUIC_STREAM_FIN = 512,
    MSG_QUIC_STREAM_UNI = 2048,
    MSG_QUIC_STREAM_DONTWAIT = 65536,
    MSG_QUIC_STREAM_SNDBLOCK = 8192,
    MSG_QUIC_DATAGRAM = 4096,
    MSG_QUIC_NOTIFICATION = 32768,
};

enum quic_crypto_level {
    QUIC_CRYPTO_APP = 0,
    QUIC_CRYPTO_INITIAL = 1,
    QUIC_CRYPTO_HANDSHAKE = 2,
    QUIC_CRYPTO_EARLY = 3,
    QUIC_CRYPTO_MAX = 4,
};

struct quic_handshake_info {
    uint8_t crypto_level;
};

struct quic_stream_info {
    int64_t stream_id;
    uint32_t stream_flags;
};

struct quic_transport_param {
    uint8_t remote;
    uint8_t disable_active_migration;
    uint8_t grease_quic_bit;
    uint8_t stateless_reset;
    uint8_t disable_1rtt_encryption;
    uint8_t disable_compatible_version;
    uint8_t active_connection_id_limit;
    uint8_t ack_delay_exponent;
    uint16_t max_datagram_frame_size;
    uint16_t max_udp_payload_size;
    uint32_t max_idle_timeout;
    uint32_t max_ack_delay;
    uint16_t max_streams_bidi;
    uint16_t max_streams_uni;
    uint64_t max_data;
    uint64_t max_stream_data_bidi_local;
    uint64_t max_stream_data_bidi_remote;
    uint64_t max_stream_data_uni;
};

struct quic_config {
    uint32_t version;
    uint32_t plpmtud_probe_interval;
    uint32_t initial_smoothed_rtt;
    uint32_t payload_cipher_type;
    uint8_t congestion_control_algo;
    uint8_t validate_peer_address;
    uint8_t stream_data_nodelay;
    uint8_t receive_session_ticket;
    uint8_t certificate_request;
    uint8_t reserved[3];
    uint32_t keepalive_probe_interval;
};

struct quic_crypto_secret {
    uint8_t send;
    uint8_t level;
    uint16_t reserved;
    uint32_t type;
    uint8_t secret[48];
};

enum quic_cong_algo {
    QUIC_CONG_ALG_RENO = 0,
    QUIC_CONG_ALG_CUBIC = 1,
    QUIC_CONG_ALG_MAX = 2,
};

struct quic_errinfo {
    int64_t stream_id;
    uint32_t errcode;
};

struct quic_connection_id_info {
    uint8_t dest;
    uint8_t reserved[3];
    uint32_t active;
    uint32_t prior_to;
};

struct quic_event_option {
    uint8_t type;
    uint8_t on;
};

enum quic_event_type {
    QUIC_EVENT_NONE = 0,
    QUIC_EVENT_STREAM_UPDATE = 1,
    QUIC_EVENT_STREAM_MAX_DATA = 2,
    QUIC_EVENT_STREAM_MAX_STREAM = 3,
    QUIC_EVENT_CONNECTION_ID = 4,
    QUIC_EVENT_CONNECTION_CLOSE = 5,
    QUIC_EVENT_CONNECTION_MIGRATION = 6,
    QUIC_EVENT_KEY_UPDATE = 7,
    QUIC_EVENT_NEW_TOKEN = 8,
    QUIC_EVENT_NEW_SESSION_TICKET = 9,
    QUIC_EVENT_MAX = 10,
};

enum {
    QUIC_STREAM_SEND_STATE_READY = 0,
    QUIC_STREAM_SEND_STATE_SEND = 1,
    QUIC_STREAM_SEND_STATE_SENT = 2,
    QUIC_STREAM_SEND_STATE_RECVD = 3,
    QUIC_STREAM_SEND_STATE_RESET_SENT = 4,
    QUIC_STREAM_SEND_STATE_RESET_RECVD = 5,
    QUIC_STREAM_RECV_STATE_RECV = 6,
    QUIC_STREAM_RECV_STATE_SIZE_KNOWN = 7,
    QUIC_STREAM_RECV_STATE_RECVD = 8,
    QUIC_STREAM_RECV_STATE_READ = 9,
    QUIC_STREAM_RECV_STATE_RESET_RECVD = 10,
    QUIC_STREAM_RECV_STATE_RESET_READ = 11,
};

struct quic_stream_update {
    int64_t id;
    uint8_t state;
    uint8_t reserved[3];
    uint32_t errcode;
    uint64_t finalsz;
};

struct quic_stream_max_data {
    int64_t id;
    uint64_t max_data;
};

struct quic_connection_close {
    uint32_t errcode;
    uint8_t frame;
    uint8_t reserved[3];
    uint8_t phrase[64];
};

union quic_event {
    struct quic_stream_update update;
    struct quic_stream_max_data max_data;
    struct quic_connection_close close;
    struct quic_connection_id_info info;
    uint64_t max_stream;
    uint8_t local_migration;
    uint8_t key_update_phase;
};

enum {
    QUIC_TRANSPORT_ERROR_NONE = 0,
    QUIC_TRANSPORT_ERROR_INTERNAL = 1,
    QUIC_TRANSPORT_ERROR_CONNECTION_REFUSED = 2,
    QUIC_TRANSPORT_ERROR_FLOW_CONTROL = 3,
    QUIC_TRANSPORT_ERROR_STREAM_LIMIT = 4,
    QUIC_TRANSPORT_ERROR_STREAM_STATE = 5,
    QUIC_TRANSPORT_ERROR_FINAL_SIZE = 6,
    QUIC_TRANSPORT_ERROR_FRAME_ENCODING = 7,
    QUIC_TRANSPORT_ERROR_TRANSPORT_PARAM = 8,
    QUIC_TRANSPORT_ERROR_CONNECTION_ID_LIMIT = 9,
    QUIC_TRANSPORT_ERROR_PROTOCOL_VIOLATION = 10,
    QUIC_TRANSPORT_ERROR_INVALID_TOKEN = 11,
    QUIC_TRANSPORT_ERROR_APPLICATION = 12,
    QUIC_TRANSPORT_ERROR_CRYPTO_BUF_EXCEEDED = 13,
    QUIC_TRANSPORT_ERROR_KEY_UPDATE = 14,
    QUIC_TRANSPORT_ERROR_AEAD_LIMIT_REACHED = 15,
    QUIC_TRANSPORT_ERROR_NO_VIABLE_PATH = 16,
    QUIC_TRANSPORT_ERROR_VERSION_NEGOTIATION = 17,
    QUIC_TRANSPORT_ERROR_CRYPTO = 256,
};
"""
