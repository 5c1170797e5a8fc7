//! Steering a QUIC listener's datagrams to the core that owns their
//! connection, in the kernel: a classic BPF program on the listener's
//! SO_REUSEPORT group (SO_ATTACH_REUSEPORT_CBPF) reads the destination
//! connection id and returns the index of the owner's socket.
//!
//! Without it the kernel picks a socket by a hash of the 4-tuple, which is
//! right until the client's address or port changes (NAT rebinding,
//! migration); after that a connection's datagrams land on any core and
//! must be handed over in user space ([`super::handover`], which stays for
//! what still lands wrong).
//!
//! The owner is in every id this edge issues ([`super::cid`]), masked by a
//! keyed mix of the id's nonce so that an observer does not read it. The
//! mix is what classic BPF can compute (32-bit multiply, xor and shift
//! rounds with the key as immediate constants of the program), not a
//! cryptographic PRF: it hides the core from a casual observer and keeps a
//! connection's ids unlinkable by their bytes, as QUIC-LB's obfuscated
//! modes do; the id's 16-bit tag, which decides whether a core accepts the
//! id, stays HMAC-keyed. The program lives in the kernel: the key is not
//! readable from outside the host.
//!
//! What the program does with a datagram (offsets are in the UDP payload):
//!
//! - short header (`0x80` clear): the id is at offset 1, [`CID_LEN`] bytes
//!   (the length the server chose);
//! - long header whose destination id is [`CID_LEN`] bytes long (byte 5):
//!   the id is at offset 6 (a client's Handshake and Initial packets after
//!   the server's first answer; a client's first random id maps to a stable
//!   core too, since every packet with that id maps to the same one);
//! - anything shorter, other id lengths, or an owner past the last socket:
//!   no answer (`u32::MAX`), and the kernel falls back to its hash.
//!
//! Why by hand: no crate builds classic BPF for reuseport groups, and the
//! program is 40 instructions.

use super::cid::CID_LEN;

/// The secret of the mix: four 32-bit words, the last three odd (so each
/// multiply is a bijection).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SteerKey([u32; 4]);

impl std::fmt::Debug for SteerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SteerKey(..)")
    }
}

/// Offset of the nonce's last byte, and of the masked core byte, in an id.
const NONCE_TAIL: u32 = 4;
const CORE_BYTE: u32 = 5;

impl SteerKey {
    /// A fresh random key.
    pub fn random() -> SteerKey {
        let mut b = [0u8; 16];
        // getrandom fails only without a kernel RNG: nothing would work then.
        getrandom::getrandom(&mut b).expect("kernel random numbers");
        SteerKey::from_bytes(b)
    }

    fn from_bytes(b: [u8; 16]) -> SteerKey {
        let w = |i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
        SteerKey([w(0), w(1) | 1, w(2) | 1, w(3) | 1])
    }

    /// The mask of an id's core byte: a keyed mix of its 5-byte nonce
    /// (exactly what [`SteerKey::program`] computes).
    pub fn mask(&self, nonce: &[u8; 5]) -> u8 {
        let [k0, k1, k2, k3] = self.0;
        let mut a = u32::from_be_bytes([nonce[0], nonce[1], nonce[2], nonce[3]]) ^ k0;
        a = a.wrapping_mul(k1);
        a ^= a >> 16;
        a ^= u32::from(nonce[4]);
        a = a.wrapping_mul(k2);
        a ^= a >> 15;
        a = a.wrapping_mul(k3);
        a ^= a >> 13;
        (a >> 24) as u8
    }

    /// The reuseport program for a group of `sockets` sockets, socket `i`
    /// being core `i`'s.
    pub fn program(&self, sockets: usize) -> Vec<Insn> {
        let [k0, k1, k2, k3] = self.0;
        let cid = CID_LEN as u32;
        let mut p = Asm::default();
        p.op(LD | W | LEN, 0);
        p.jump(JGE | K, 1 + cid, None, Some("fall"));
        p.op(LD | B | ABS, 0);
        p.jump(JSET | K, 0x80, Some("long"), None);
        p.op(LDX | W | IMM, 1);
        p.jump(JA, 0, Some("mix"), Some("mix"));
        p.label("long");
        p.op(LD | W | LEN, 0);
        p.jump(JGE | K, 6 + cid, None, Some("fall"));
        p.op(LD | B | ABS, 5);
        p.jump(JEQ | K, cid, None, Some("fall"));
        p.op(LDX | W | IMM, 6);
        p.label("mix");
        p.op(STX, 1); // M[1] = where the id starts
        p.op(LD | W | IND, 0);
        p.op(ALU | XOR | K, k0);
        p.op(ALU | MUL | K, k1);
        p.xor_shift(16);
        p.op(ST, 0);
        p.op(LDX | W | MEM, 1);
        p.op(LD | B | IND, NONCE_TAIL);
        p.op(MISC | TAX, 0);
        p.op(LD | W | MEM, 0);
        p.op(ALU | XOR | X, 0);
        p.op(ALU | MUL | K, k2);
        p.xor_shift(15);
        p.op(ALU | MUL | K, k3);
        p.xor_shift(13);
        p.op(ALU | RSH | K, 24);
        p.op(ST, 2); // M[2] = the mask
        p.op(LDX | W | MEM, 1);
        p.op(LD | B | IND, CORE_BYTE);
        p.op(LDX | W | MEM, 2);
        p.op(ALU | XOR | X, 0); // A = the owner
        p.jump(JGE | K, sockets as u32, Some("fall"), None);
        p.op(RET | A, 0);
        p.label("fall");
        p.op(RET | K, u32::MAX);
        p.finish()
    }
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const B: u16 = 0x10;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const LEN: u16 = 0x80;
const MUL: u16 = 0x20;
const RSH: u16 = 0x70;
const XOR: u16 = 0xa0;
const JA: u16 = JMP;
const JEQ: u16 = JMP | 0x10;
const JGE: u16 = JMP | 0x30;
const JSET: u16 = JMP | 0x40;
const K: u16 = 0x00;
const X: u16 = 0x08;
const A: u16 = 0x10;
const TAX: u16 = 0x00;

/// A tiny assembler: forward jumps to labels, resolved at the end.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<(&'static str, usize)>,
    /// (instruction, taken label, not-taken label)
    jumps: Vec<(usize, Option<&'static str>, Option<&'static str>)>,
}

impl Asm {
    fn op(&mut self, code: u16, k: u32) {
        self.insns.push(Insn { code, jt: 0, jf: 0, k });
    }

    /// A conditional jump (`None`: fall through); `JA` jumps by `k`, so its
    /// target goes in `k` instead.
    fn jump(&mut self, code: u16, k: u32, taken: Option<&'static str>, not_taken: Option<&'static str>) {
        self.jumps.push((self.insns.len(), taken, not_taken));
        self.op(code, k);
    }

    /// `A ^= A >> n` (through M[0] and X).
    fn xor_shift(&mut self, n: u32) {
        self.op(ST, 0);
        self.op(ALU | RSH | K, n);
        self.op(MISC | TAX, 0);
        self.op(LD | W | MEM, 0);
        self.op(ALU | XOR | X, 0);
    }

    fn label(&mut self, name: &'static str) {
        self.labels.push((name, self.insns.len()));
    }

    fn finish(mut self) -> Vec<Insn> {
        let at = |labels: &[(&str, usize)], name: &str| {
            labels.iter().find(|(l, _)| *l == name).map(|(_, i)| *i).unwrap_or_else(|| unreachable!("label {name} placed"))
        };
        for (i, taken, not_taken) in std::mem::take(&mut self.jumps) {
            let rel = |target: Option<&str>| target.map_or(0, |t| at(&self.labels, t) - i - 1);
            let insn = &mut self.insns[i];
            if insn.code == JA {
                insn.k = rel(taken) as u32;
            } else {
                insn.jt = rel(taken) as u8;
                insn.jf = rel(not_taken) as u8;
            }
        }
        self.insns
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Classic BPF as the kernel runs it, for the opcodes the program uses
    /// (an out-of-bounds load ends the program with 0, as in the kernel).
    pub(crate) fn run(prog: &[Insn], pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut m) = (0u32, 0u32, [0u32; 16]);
        let load = |off: u32, size: usize| -> Option<u32> {
            let off = off as usize;
            let b = pkt.get(off..off + size)?;
            Some(b.iter().fold(0u32, |v, &byte| v << 8 | u32::from(byte)))
        };
        let mut pc = 0;
        loop {
            let i = prog[pc];
            pc += 1;
            let size = if i.code & 0x18 == B { 1 } else { 4 };
            match i.code {
                c if c == LD | W | LEN => a = pkt.len() as u32,
                c if c == LD | W | ABS || c == LD | B | ABS => match load(i.k, size) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c == LD | W | IND || c == LD | B | IND => match load(x.wrapping_add(i.k), size) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c == LD | W | MEM => a = m[i.k as usize],
                c if c == LDX | W | IMM => x = i.k,
                c if c == LDX | W | MEM => x = m[i.k as usize],
                ST => m[i.k as usize] = a,
                STX => m[i.k as usize] = x,
                c if c == ALU | XOR | K => a ^= i.k,
                c if c == ALU | XOR | X => a ^= x,
                c if c == ALU | MUL | K => a = a.wrapping_mul(i.k),
                c if c == ALU | RSH | K => a >>= i.k,
                c if c == MISC | TAX => x = a,
                JA => pc += i.k as usize,
                JEQ => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JGE => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
                JSET => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                c if c == RET | A => return a,
                c if c == RET | K => return i.k,
                c => panic!("opcode {c:#x} not in the interpreter"),
            }
        }
    }

    fn id_of(key: &SteerKey, nonce: [u8; 5], core: u8) -> [u8; CID_LEN] {
        let mut id = [0u8; CID_LEN];
        id[..5].copy_from_slice(&nonce);
        id[5] = core ^ key.mask(&nonce);
        id[6] = 0xaa;
        id[7] = 0x55;
        id
    }

    fn short_header(id: &[u8]) -> Vec<u8> {
        let mut p = vec![0x41];
        p.extend_from_slice(id);
        p.extend_from_slice(&[0u8; 40]);
        p
    }

    fn long_header(id: &[u8]) -> Vec<u8> {
        let mut p = vec![0xc3, 0, 0, 0, 1, id.len() as u8];
        p.extend_from_slice(id);
        p.push(8);
        p.extend_from_slice(&[7u8; 8]);
        p.extend_from_slice(&[0u8; 1200]);
        p
    }

    #[test]
    fn the_program_computes_the_owner_the_ids_carry() {
        let key = SteerKey::random();
        let prog = key.program(4);
        let mut nonce = [0u8; 5];
        for n in 0..2000u32 {
            nonce[..4].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
            nonce[4] = n as u8;
            let core = (n % 4) as u8;
            let id = id_of(&key, nonce, core);
            assert_eq!(run(&prog, &short_header(&id)), u32::from(core), "short header, id {id:02x?}");
            assert_eq!(run(&prog, &long_header(&id)), u32::from(core), "long header, id {id:02x?}");
        }
    }

    #[test]
    fn what_names_no_socket_falls_back_to_the_kernel_hash() {
        let key = SteerKey::random();
        let prog = key.program(2);
        let nonce = [1, 2, 3, 4, 5];
        // An owner past the group, a short datagram, a long header with
        // another id length: u32::MAX (the kernel then hashes).
        assert_eq!(run(&prog, &short_header(&id_of(&key, nonce, 7))), u32::MAX);
        assert_eq!(run(&prog, &[0x41, 1, 2, 3]), u32::MAX);
        assert_eq!(run(&prog, &long_header(&[9u8; 16])), u32::MAX);
        assert_eq!(run(&prog, &[]), u32::MAX);
    }

    #[test]
    fn the_mask_depends_on_every_nonce_byte_and_on_the_key() {
        let key = SteerKey::from_bytes([7; 16]);
        let base = [10, 20, 30, 40, 50];
        for i in 0..5 {
            let changed = (0..=255u8)
                .filter(|&v| {
                    let mut n = base;
                    n[i] = v;
                    key.mask(&n) != key.mask(&base)
                })
                .count();
            assert!(changed > 200, "byte {i}: {changed}/256 values change the mask");
        }
        let other = SteerKey::from_bytes([8; 16]);
        let differ = (0..=255u8).filter(|&v| key.mask(&[v, 1, 2, 3, 4]) != other.mask(&[v, 1, 2, 3, 4])).count();
        assert!(differ > 200, "{differ}/256 masks differ between keys");
    }
}
