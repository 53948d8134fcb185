//! The raw copy, run as a process of its own: this executable again, with
//! `TAILGATE_E2E_ROLE=copy`.

use std::collections::{BTreeSet, HashMap};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::{COMMIT_INTERVAL, COPY_ONE_IN};

/// FNV-1a of the key: the copy's "sampler".
pub fn keeps(key: &[u8]) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % COPY_ONE_IN == 0
}

/// Delivery reports, collected by the producer's callback (which runs in
/// `poll`, on the copy's one thread) for the loop to apply.
struct Context {
    delivered: Mutex<Vec<(i32, i64)>>,
    failed: AtomicU64,
}

impl ClientContext for Context {}

impl ProducerContext for Context {
    /// The input partition and offset of the forwarded message.
    type DeliveryOpaque = Box<(i32, i64)>;

    fn delivery(&self, result: &DeliveryResult<'_>, from: Box<(i32, i64)>) {
        match result {
            Ok(_) => {
                if let Ok(mut d) = self.delivered.lock() {
                    d.push(*from);
                }
            }
            Err((e, _)) => {
                // Its offset stays pinned: the harness sees the copy never
                // drain, and says so.
                if self.failed.fetch_add(1, Ordering::Relaxed) < 10 {
                    eprintln!("copy: delivery failed: {e}");
                }
            }
        }
    }
}

/// Per input partition: the next offset to read, and the offsets of
/// forwarded messages not yet acknowledged. The offset to store is the
/// lowest of those, or the next to read.
#[derive(Default)]
struct Partition {
    next: i64,
    pending: BTreeSet<i64>,
    stored: i64,
}

impl Partition {
    fn committable(&self) -> i64 {
        self.pending.first().copied().unwrap_or(self.next)
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("copy: {name} is not set"))
}

/// Consume → forward every tenth trace unchanged → store each offset once
/// everything before it is delivered (dropped messages count as done when
/// read) → auto-commit. Runs until SIGTERM (the harness stops it once the
/// group's offsets reach the end), at most `E2E_MAX_SECONDS`.
pub fn main() -> ExitCode {
    let (brokers, input, output, group) = (
        env("E2E_BROKERS"),
        env("E2E_INPUT"),
        env("E2E_OUTPUT"),
        env("E2E_GROUP"),
    );
    let max_run = Duration::from_secs(env("E2E_MAX_SECONDS").parse().unwrap_or(3600));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            COMMIT_INTERVAL.as_millis().to_string(),
        )
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()
        .expect("copy: create the consumer");
    consumer
        .subscribe(&[&input])
        .expect("copy: subscribe to the input topic");
    // tailgate's producer settings (src/kafka/producer.rs, kafka.compression default).
    let producer: BaseProducer<Context> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create_with_context(Context {
            delivered: Mutex::new(Vec::new()),
            failed: AtomicU64::new(0),
        })
        .expect("copy: create the producer");
    let started = Instant::now();
    let mut partitions: HashMap<i32, Partition> = HashMap::new();
    let mut touched: Vec<i32> = Vec::new();
    let mut delivered: Vec<(i32, i64)> = Vec::new();
    let mut n: u64 = 0;
    loop {
        if n % 65_536 == 0 && started.elapsed() > max_run {
            eprintln!("copy: giving up after {max_run:?}");
            return ExitCode::FAILURE;
        }
        producer.poll(Duration::ZERO);
        if let Ok(mut d) = producer.context().delivered.lock() {
            std::mem::swap(&mut *d, &mut delivered);
        }
        for (p, offset) in delivered.drain(..) {
            if let Some(state) = partitions.get_mut(&p) {
                state.pending.remove(&offset);
                touched.push(p);
            }
        }
        // Idle: wait for input, but not long while deliveries are due.
        let wait = if n > 0 {
            Duration::ZERO
        } else if partitions.values().any(|s| !s.pending.is_empty()) {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(100)
        };
        match consumer.poll(wait) {
            None => n = 0,
            Some(Err(e)) => eprintln!("copy: consumer error: {e}"),
            Some(Ok(m)) => {
                n += 1;
                let (p, offset) = (m.partition(), m.offset());
                let state = partitions.entry(p).or_default();
                state.next = offset + 1;
                touched.push(p);
                if let Some(key) = m.key().filter(|k| keeps(k)) {
                    state.pending.insert(offset);
                    let mut record = BaseRecord::with_opaque_to(&output, Box::new((p, offset)))
                        .key(key)
                        .payload(m.payload().unwrap_or_default());
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                r,
                            )) if Instant::now() < deadline => {
                                record = r;
                                producer.poll(Duration::from_millis(10));
                            }
                            Err((e, _)) => {
                                eprintln!("copy: cannot produce: {e}");
                                return ExitCode::FAILURE;
                            }
                        }
                    }
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for p in touched.drain(..) {
            let Some(state) = partitions.get_mut(&p) else {
                continue;
            };
            let at = state.committable();
            if at > state.stored {
                let mut tpl = TopicPartitionList::with_capacity(1);
                if tpl
                    .add_partition_offset(&input, p, Offset::Offset(at))
                    .is_ok()
                {
                    match consumer.store_offsets(&tpl) {
                        Ok(()) => state.stored = at,
                        Err(e) => eprintln!("copy: cannot store offset {at} of {p}: {e}"),
                    }
                }
            }
        }
    }
}
