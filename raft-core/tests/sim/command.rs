//! The commands of the simulations' key-value store, and their encoding.

use bytes::Bytes;

/// A command of the replicated key-value store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Put {
        key: u64,
        value: u64,
    },
    Cas {
        key: u64,
        expected: Option<u64>,
        new: u64,
    },
}

impl Command {
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(26);
        match *self {
            Command::Put { key, value } => {
                out.push(1);
                out.extend_from_slice(&key.to_le_bytes());
                out.extend_from_slice(&value.to_le_bytes());
            }
            Command::Cas { key, expected, new } => {
                out.push(2);
                out.extend_from_slice(&key.to_le_bytes());
                out.push(expected.is_some() as u8);
                out.extend_from_slice(&expected.unwrap_or(0).to_le_bytes());
                out.extend_from_slice(&new.to_le_bytes());
            }
        }
        Bytes::from(out)
    }

    pub fn decode(b: &[u8]) -> Command {
        let u = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        match b[0] {
            1 => Command::Put {
                key: u(1),
                value: u(9),
            },
            2 => Command::Cas {
                key: u(1),
                expected: (b[9] == 1).then(|| u(10)),
                new: u(18),
            },
            tag => panic!("unknown command tag {tag}"),
        }
    }
}
