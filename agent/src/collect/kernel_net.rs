//! The kernel's network and interrupt tables, read as Telegraf's `nstat`, `netstat`,
//! `conntrack` and `interrupts` inputs read them (their Go code, Telegraf b2726314, was the
//! reference): /proc/net/{netstat,snmp,snmp6}, /proc/net/{tcp,tcp6,udp,udp6},
//! /proc/sys/net/netfilter/nf_conntrack_{count,max}, /proc/interrupts and /proc/softirqs.
//! Pure parsers; the host collector reads the files.

use std::collections::{BTreeMap, HashSet};

use leakmon_protocol::{Conntrack, Irq, Sockets};

/// Which counters to keep: patterns over Telegraf's names (`TcpExtListenDrops`: the line's
/// prefix and the counter's name), a trailing `*` matching a prefix; `*` alone keeps all.
/// Built once from the config: exact names looked up in a set, so 400 counters against 68
/// patterns are 400 lookups, not 27,000 comparisons.
#[derive(Debug, Clone, Default)]
pub struct CounterFilter {
    all: bool,
    exact: HashSet<String>,
    prefixes: Vec<String>,
}

impl CounterFilter {
    pub fn new(patterns: &[String]) -> Self {
        let mut f = CounterFilter::default();
        for p in patterns {
            match p.strip_suffix('*') {
                Some("") => f.all = true,
                Some(prefix) => f.prefixes.push(prefix.to_owned()),
                None => {
                    f.exact.insert(p.clone());
                }
            }
        }
        f
    }

    /// Keeps nothing: no need to read the files.
    pub fn is_empty(&self) -> bool {
        !self.all && self.exact.is_empty() && self.prefixes.is_empty()
    }

    fn keeps(&self, line: &str, name: &str, joined: &mut String) -> bool {
        if self.all {
            return true;
        }
        joined.clear();
        joined.push_str(line);
        joined.push_str(name);
        self.exact.contains(joined.as_str()) || self.prefixes.iter().any(|p| joined.starts_with(p))
    }
}

/// What a [`CounterFilter`] keeps of one file, remembered between reads. The kernel prints
/// the same names in the same order every time, so a read compares each name line with the one
/// it saw last and walks the names through the filter only when it changed: matching 400 names
/// against the patterns every sample was a fifth of the agent's instructions.
#[derive(Debug, Default)]
pub struct Layout {
    lines: Vec<LineLayout>,
}

#[derive(Debug)]
struct LineLayout {
    /// The line of names as last seen (snmp6: the counter's name).
    names: String,
    /// How many names it has.
    count: usize,
    /// The positions kept and their names, in order.
    kept: Vec<(usize, String)>,
}

impl Layout {
    /// The layout of the `k`th line of names, `names` (prefix `prefix`), walked through
    /// `keep` again if it is not the one seen last.
    fn line(&mut self, k: usize, prefix: &str, names: &str, keep: &CounterFilter) -> &LineLayout {
        if self.lines.get(k).is_none_or(|l| !same(&l.names, names)) {
            let mut joined = String::new();
            let fresh = LineLayout {
                names: names.to_owned(),
                count: names.split_ascii_whitespace().count(),
                kept: names
                    .split_ascii_whitespace()
                    .enumerate()
                    .filter(|(_, n)| keep.keeps(prefix, n, &mut joined))
                    .map(|(i, n)| (i, n.to_owned()))
                    .collect(),
            };
            self.lines.truncate(k);
            self.lines.push(fresh);
        }
        &self.lines[k]
    }
}

/// Whether `a` and `b` are the same text, compared 8 bytes at a time in line (`==` calls the C
/// library's `bcmp`, which musl's static build does a byte at a time: comparing the name lines
/// so was a twentieth of the agent's instructions).
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (wa.remainder(), wb.remainder());
    wa.zip(wb).all(|(x, y)| {
        let word = |w: &[u8]| {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            u64::from_ne_bytes(b)
        };
        word(x) == word(y)
    }) && ra.iter().zip(rb).all(|(x, y)| x == y)
}

/// /proc/net/netstat or /proc/net/snmp: pairs of lines, `Tcp: ActiveOpens PassiveOpens ...`
/// then `Tcp: 12 3 ...`. A pair whose lines disagree (prefix or length) is skipped, as is a
/// value that is not an integer.
#[cfg(test)]
pub fn parse_pairs(text: &str, keep: &CounterFilter) -> BTreeMap<String, BTreeMap<String, i64>> {
    parse_pairs_in(text, keep, &mut Layout::default())
}

/// [`parse_pairs`] with the layout of the file's last read.
pub fn parse_pairs_in(
    text: &str,
    keep: &CounterFilter,
    layout: &mut Layout,
) -> BTreeMap<String, BTreeMap<String, i64>> {
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let mut lines = text.lines();
    let mut k = 0;
    while let (Some(head), Some(values)) = (lines.next(), lines.next()) {
        let (Some((hp, names)), Some((vp, nums))) = (head.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if hp != vp {
            continue;
        }
        let line = layout.line(k, hp, names, keep);
        k += 1;
        let mut kept = BTreeMap::new();
        let mut want = line.kept.iter().peekable();
        let mut count = 0;
        for (i, value) in nums.split_ascii_whitespace().enumerate() {
            count += 1;
            if let Some((_, name)) = want.next_if(|(at, _)| *at == i) {
                if let Ok(v) = value.parse::<i64>() {
                    kept.insert(name.clone(), v);
                }
            }
        }
        if count == line.count && !kept.is_empty() {
            out.entry(hp.to_owned()).or_default().extend(kept);
        }
    }
    out
}

/// /proc/net/snmp6: one `Ip6InReceives 1234` per line.
#[cfg(test)]
pub fn parse_snmp6(text: &str, keep: &CounterFilter) -> BTreeMap<String, i64> {
    parse_snmp6_in(text, keep, &mut Layout::default())
}

/// [`parse_snmp6`] with the layout of the file's last read.
pub fn parse_snmp6_in(
    text: &str,
    keep: &CounterFilter,
    layout: &mut Layout,
) -> BTreeMap<String, i64> {
    text.lines()
        .enumerate()
        .filter_map(|(k, l)| {
            let mut it = l.split_ascii_whitespace();
            let (name, value) = (it.next()?, it.next()?);
            layout.line(k, "", name, keep).kept.first()?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Adds the sockets of one /proc/net/tcp or tcp6 table (the state is the fourth column, in
/// hex: `0A` is LISTEN) to `s`.
pub fn count_tcp(s: &mut Sockets, text: &str) {
    for line in text.lines().skip(1) {
        let Some(st) = line.split_whitespace().nth(3) else {
            continue;
        };
        let n = match u8::from_str_radix(st, 16).unwrap_or(0) {
            1 => &mut s.tcp_established,
            2 => &mut s.tcp_syn_sent,
            3 => &mut s.tcp_syn_recv,
            4 => &mut s.tcp_fin_wait1,
            5 => &mut s.tcp_fin_wait2,
            6 => &mut s.tcp_time_wait,
            7 => &mut s.tcp_close,
            8 => &mut s.tcp_close_wait,
            9 => &mut s.tcp_last_ack,
            10 => &mut s.tcp_listen,
            11 => &mut s.tcp_closing,
            _ => &mut s.tcp_none,
        };
        *n += 1;
    }
}

/// Adds the sockets of one /proc/net/udp or udp6 table to `s`.
pub fn count_udp(s: &mut Sockets, text: &str) {
    let n = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count();
    s.udp_socket += n as u64;
}

/// nf_conntrack_count and nf_conntrack_max; none unless both read.
pub fn parse_conntrack(count: &str, max: &str) -> Option<Conntrack> {
    Some(Conntrack {
        count: count.trim().parse().ok()?,
        max: max.trim().parse().ok()?,
    })
}

/// /proc/interrupts or /proc/softirqs: a `CPU0 CPU1 ...` header, then one line per IRQ:
/// `24:  10  20  GICv2  30 Level  arch_timer` (numbered: a type, then the device) or
/// `NMI:  0  0  Non-maskable interrupts` (named: the rest is the type). Lines with fewer
/// counts than CPUs (`ERR:  0`) keep the counts they have; a line with a count that is not
/// a number is skipped; a file without the header gives nothing.
pub fn parse_interrupts(text: &str) -> Vec<Irq> {
    let mut lines = text.lines();
    let n_cpus = match lines.next() {
        Some(h) if h.split_whitespace().next() == Some("CPU0") => h.split_whitespace().count(),
        _ => return Vec::new(),
    };
    lines
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let irq = fields.next()?.strip_suffix(':')?;
            let rest: Vec<&str> = fields.collect();
            let counted = rest.len().min(n_cpus);
            let cpus = rest[..counted]
                .iter()
                .map(|c| c.parse::<u64>().ok())
                .collect::<Option<Vec<u64>>>()?;
            let tail = &rest[counted..];
            let numbered = irq.parse::<u64>().is_ok();
            let (kind, device) = match tail.split_first() {
                Some((k, dev)) if numbered => (k.to_string(), dev.join(" ")),
                _ => (tail.join(" "), String::new()),
            };
            Some(Irq {
                irq: irq.to_owned(),
                kind,
                device,
                cpus,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "\
Ip: Forwarding DefaultTTL InReceives InHdrErrors
Ip: 1 64 5000 2
Icmp: InMsgs InErrors
Icmp: 7 0
IcmpMsg: InType3 OutType3
IcmpMsg: 7 7
Tcp: RtoAlgorithm ActiveOpens MaxConn
Tcp: 1 12 -1
Udp: InDatagrams NoPorts
Udp: 40 bogus
";

    fn all() -> Vec<String> {
        vec!["*".into()]
    }

    #[test]
    fn snmp_pairs_keep_every_line_and_the_sign_of_maxconn() {
        let all = all();
        let m = parse_pairs(SNMP, &CounterFilter::new(&all));
        assert_eq!(m["Ip"]["InHdrErrors"], 2);
        assert_eq!(m["IcmpMsg"]["OutType3"], 7);
        assert_eq!(m["Tcp"]["MaxConn"], -1);
        assert_eq!(m["Udp"].len(), 1, "a value that is no number is skipped");
        assert_eq!(m.values().map(BTreeMap::len).sum::<usize>(), 12);
    }

    #[test]
    fn the_filter_matches_telegraf_names_exactly_or_by_prefix() {
        let pats: Vec<String> = vec!["IpInHdrErrors".into(), "Tcp*".into()];
        let m = parse_pairs(SNMP, &CounterFilter::new(&pats));
        let names: Vec<String> = m
            .iter()
            .flat_map(|(l, c)| c.keys().map(move |k| format!("{l}{k}")))
            .collect();
        assert_eq!(
            names,
            [
                "IpInHdrErrors",
                "TcpActiveOpens",
                "TcpMaxConn",
                "TcpRtoAlgorithm"
            ]
        );
        assert!(parse_pairs(SNMP, &CounterFilter::new(&[])).is_empty());
    }

    #[test]
    fn mismatched_or_odd_lines_are_skipped() {
        let text =
            "TcpExt: A B\nTcpExt: 1 2\nIpExt: X Y\nIpExt: 1\nMPTcpExt: Z\nOther: 3\nLone: Q\n";
        let all = all();
        let m = parse_pairs(text, &CounterFilter::new(&all));
        assert_eq!(m.len(), 1);
        assert_eq!(m["TcpExt"]["B"], 2);
    }

    #[test]
    fn snmp6_lines() {
        let text = "Ip6InReceives                   \t40\nIp6InHdrErrors 0\nIcmp6InMsgs x\n\n";
        let all = all();
        let m = parse_snmp6(text, &CounterFilter::new(&all));
        assert_eq!(m.len(), 2);
        assert_eq!(m["Ip6InReceives"], 40);
        let only: Vec<String> = vec!["Ip6InHdr*".into()];
        assert_eq!(parse_snmp6(text, &CounterFilter::new(&only)).len(), 1);
    }

    #[test]
    fn same_text_compared_by_words() {
        for (a, b) in [
            ("", ""),
            ("a", "a"),
            ("TcpExt: SyncookiesSent", "TcpExt: SyncookiesSent"),
        ] {
            assert!(same(a, b), "{a:?}");
        }
        for (a, b) in [
            ("a", ""),
            ("abcdefghi", "abcdefghj"),
            ("abcdefgh1", "bbcdefgh1"),
            ("ab", "ac"),
        ] {
            assert!(!same(a, b) && !same(b, a), "{a:?} {b:?}");
        }
    }

    #[test]
    fn a_remembered_layout_reads_the_same_and_follows_a_change() {
        let pats: Vec<String> = vec!["IpInHdrErrors".into(), "Tcp*".into()];
        let keep = CounterFilter::new(&pats);
        let mut layout = Layout::default();
        let first = parse_pairs_in(SNMP, &keep, &mut layout);
        assert_eq!(first, parse_pairs(SNMP, &keep));
        assert_eq!(
            parse_pairs_in(SNMP, &keep, &mut layout),
            first,
            "read again"
        );
        // a kernel with another column order (a new kernel, or a file of another namespace)
        let moved = "Tcp: MaxConn ActiveOpens\nTcp: 5 6\n";
        let m = parse_pairs_in(moved, &keep, &mut layout);
        assert_eq!(m["Tcp"]["ActiveOpens"], 6);
        assert_eq!(m["Tcp"]["MaxConn"], 5);
        assert_eq!(m.len(), 1);
        assert_eq!(parse_pairs_in(SNMP, &keep, &mut layout), first, "and back");
        let text = "Ip6InReceives 40\nIp6InHdrErrors 0\n";
        let only = CounterFilter::new(&["Ip6InHdr*".to_owned()]);
        let mut layout6 = Layout::default();
        assert_eq!(parse_snmp6_in(text, &only, &mut layout6).len(), 1);
        let swapped = "Ip6InHdrErrors 3\nIp6InReceives 40\n";
        let m = parse_snmp6_in(swapped, &only, &mut layout6);
        assert_eq!(
            m.into_iter().collect::<Vec<_>>(),
            [("Ip6InHdrErrors".to_owned(), 3)]
        );
    }

    #[test]
    fn sockets_by_state() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:075B 00000000:0000 0A 00000000:00000000 00:00000000 00000000   122        0 21427 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C4A 0100007F:075B 01 00000000:00000000 00:00000000 00000000  1000        0 98761 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:9C4C 0100007F:075B 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   3: 0100007F:9C4E 0100007F:075B 0D 00000000:00000000 00:00000000 00000000     0        0 0 3 0000000000000000
";
        let mut s = Sockets::default();
        count_tcp(&mut s, tcp);
        count_tcp(&mut s, "  sl  local_address\n   0: x y 0A\n");
        count_udp(&mut s, "  sl  local_address\n  1: a b 07\n  2: a b 07\n");
        assert_eq!(
            (s.tcp_listen, s.tcp_established, s.tcp_time_wait, s.tcp_none),
            (2, 1, 1, 1)
        );
        assert_eq!(s.udp_socket, 2);
    }

    #[test]
    fn conntrack_needs_both_figures() {
        assert_eq!(
            parse_conntrack("24\n", "262144\n"),
            Some(Conntrack {
                count: 24,
                max: 262_144
            })
        );
        assert_eq!(parse_conntrack("", "262144"), None);
    }

    #[test]
    fn interrupts_as_telegraf_splits_them() {
        let text = "           CPU0       CPU1
  0:         44          0   IO-APIC   2-edge      timer
 11:      12345       6789   GICv2  30 Level     arch_timer
NMI:          1          2   Non-maskable interrupts
ERR:          0
MIS:          x          0
";
        let irqs = parse_interrupts(text);
        assert_eq!(irqs.len(), 4, "the line with `x` is skipped");
        assert_eq!(
            irqs[1],
            Irq {
                irq: "11".into(),
                kind: "GICv2".into(),
                device: "30 Level arch_timer".into(),
                cpus: vec![12345, 6789],
            }
        );
        assert_eq!(irqs[2].kind, "Non-maskable interrupts");
        assert_eq!(irqs[2].device, "");
        assert_eq!(irqs[3].cpus, vec![0]);
        let soft = parse_interrupts(
            "                    CPU0       CPU1\n          HI:          5          0\n",
        );
        assert_eq!(soft[0].irq, "HI");
        assert_eq!((soft[0].kind.as_str(), soft[0].cpus.len()), ("", 2));
        assert!(parse_interrupts("garbage\n1: 2\n").is_empty());
    }
}
