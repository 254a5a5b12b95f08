use bytes::BytesMut;

use super::*;

/// The reply to `words` if they do not parse into a command, as bytes on the wire.
fn refusal(words: &[&[u8]]) -> Option<String> {
    let words = words.iter().map(|w| Bytes::copy_from_slice(w)).collect();
    let reply = Parsed::parse(words).err()?.reply();
    let mut out = BytesMut::new();
    reply.encode(&mut out);
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Replies of redis-server 7.0.15 to the same requests, byte for byte.
#[test]
fn wrong_arities_and_unknown_commands_are_answered_as_redis_answers_them() {
    let arity = |name: &str| format!("-ERR wrong number of arguments for '{name}' command\r\n");
    let x200 = [b'x'; 200];
    let a100 = [b'a'; 100];
    let b100 = [b'b'; 100];
    let cases: Vec<(Vec<&[u8]>, String)> = vec![
        (vec![b"GET"], arity("get")),
        (vec![b"get", b"a", b"b"], arity("get")),
        (vec![b"SET", b"k"], arity("set")),
        (vec![b"MGET"], arity("mget")),
        (vec![b"DEL"], arity("del")),
        (vec![b"EXISTS"], arity("exists")),
        (vec![b"INCR"], arity("incr")),
        (vec![b"INCR", b"a", b"b"], arity("incr")),
        (vec![b"ECHO"], arity("echo")),
        (vec![b"ECHO", b"a", b"b"], arity("echo")),
        (vec![b"DBSIZE", b"x"], arity("dbsize")),
        (vec![b"SELECT"], arity("select")),
        (vec![b"PING", b"a", b"b"], arity("ping")),
        (vec![b"CONFIG"], arity("config")),
        (vec![b"CLIENT"], arity("client")),
        (vec![b"READONLY", b"x"], arity("readonly")),
        (vec![b"ReadWrite", b"x"], arity("readwrite")),
        (
            vec![b"FLUSHALLX"],
            "-ERR unknown command 'FLUSHALLX', with args beginning with: \r\n".into(),
        ),
        (
            vec![b"FlushAllX", b"a", b"b\rc"],
            "-ERR unknown command 'FlushAllX', with args beginning with: 'a' 'b c' \r\n".into(),
        ),
        (
            vec![b"nope", &x200],
            format!(
                "-ERR unknown command 'nope', with args beginning with: '{}' \r\n",
                "x".repeat(128)
            ),
        ),
        (
            vec![b"nope", &a100, &b100, b"c"],
            format!(
                "-ERR unknown command 'nope', with args beginning with: '{}' '{}' \r\n",
                "a".repeat(100),
                "b".repeat(25)
            ),
        ),
        (
            vec![b"n\0ope", b"a\0b"],
            "-ERR unknown command 'n', with args beginning with: 'a' \r\n".into(),
        ),
        (
            vec![&x200],
            format!(
                "-ERR unknown command '{}', with args beginning with: \r\n",
                "x".repeat(128)
            ),
        ),
    ];
    for (words, expected) in cases {
        assert_eq!(refusal(&words).as_deref(), Some(&expected[..]), "{words:?}");
    }
}

/// The registry: names are lowercase and distinct, each is found in any case, and the
/// arity is enforced at both ends exactly as declared.
#[test]
fn every_command_is_found_by_name_and_checked_against_its_arity() {
    let mut names: Vec<&str> = COMMAND_TABLE.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), COMMAND_TABLE.len(), "a name is listed twice");
    for &CommandInfo { name, arity, .. } in COMMAND_TABLE {
        assert_eq!(name, name.to_lowercase());
        let wrong = format!("-ERR wrong number of arguments for '{name}' command\r\n");
        let minimum = arity.unsigned_abs() as usize;
        let upper = name.to_uppercase();
        if name == "client" || name == "command" || name == "config" {
            // Subcommands have arities of their own.
            continue;
        }
        let request = |count: usize| {
            let mut words = vec![upper.as_bytes()];
            words.extend(std::iter::repeat_n(&b"0"[..], count - 1));
            refusal(&words)
        };
        if minimum > 1 {
            assert_eq!(request(minimum - 1), Some(wrong.clone()), "{name}");
        }
        let at_minimum = request(minimum);
        assert_ne!(at_minimum, Some(wrong.clone()), "{name}");
        assert!(!at_minimum.is_some_and(|r| r.contains("unknown command")));
        if arity > 0 {
            assert_eq!(request(minimum + 1), Some(wrong), "{name}");
        }
    }
}
