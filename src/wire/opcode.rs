//! Opcodes and their classes. The class is decided from the header alone,
//! before any payload is decoded (spec §3).

/// Opcode values, as named in the spec.
pub mod op {
    pub const HELLO: u8 = 0x01;
    pub const PUT: u8 = 0x02;
    pub const GET: u8 = 0x03;
    pub const DEL: u8 = 0x04;
    pub const SIZE: u8 = 0x05;
    pub const GETKEYS: u8 = 0x06;
    pub const GETTABLE: u8 = 0x07;
    pub const STATS: u8 = 0x08;
    pub const VERIFY: u8 = 0x09;
    pub const AUTH: u8 = 0x0A;
    pub const BACKUP: u8 = 0x0B;
    pub const CPUT: u8 = 0x0C;
    pub const CDEL: u8 = 0x0D;
    pub const MGET: u8 = 0x0E;
    pub const MWRITE: u8 = 0x0F;
    pub const WATCH: u8 = 0x10;
    pub const UNWATCH: u8 = 0x11;
    pub const RANGE: u8 = 0x12;
    /// The last assigned client request opcode.
    pub const LAST_REQUEST: u8 = RANGE;
    pub const UPDATE: u8 = 0x40;
    pub const ACK: u8 = 0x41;
    pub const SNAPSHOT: u8 = 0x42;
    pub const HANDOFF: u8 = 0x43;
    pub const PEER_HELLO: u8 = 0x44;
    pub const PEER_CHALLENGE: u8 = 0x45;
    pub const PEER_PROOF: u8 = 0x46;
    pub const REPLY: u8 = 0x80;
    pub const ERROR: u8 = 0xFF;
}

/// What an opcode is, decided from the header alone: a receiver picks
/// what to do with a frame from this and its connection's state before it
/// decodes (or even CRC-checks) a payload it would refuse anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpClass {
    /// 0x01..=0x3F, assigned.
    ClientRequest,
    /// 0x40..=0x7F, assigned.
    Peer,
    /// A reply opcode (0x80 | request) or ERROR.
    Reply,
    /// Not assigned.
    Unknown,
}

impl OpClass {
    #[must_use]
    pub fn of(opcode: u8) -> OpClass {
        match opcode {
            op::HELLO..=op::LAST_REQUEST => OpClass::ClientRequest,
            op::UPDATE..=op::PEER_PROOF => OpClass::Peer,
            op::ERROR => OpClass::Reply,
            o if o & op::REPLY != 0
                && (op::HELLO..=op::LAST_REQUEST).contains(&(o & !op::REPLY)) =>
            {
                OpClass::Reply
            }
            _ => OpClass::Unknown,
        }
    }
}
