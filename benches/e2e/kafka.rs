//! Kafka: topics, filling them, offsets, reading the output back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tailgate_testkit::OffsetReader;

/// A message read back: (key, payload).
pub type Keyed = (Vec<u8>, Vec<u8>);

#[derive(Debug, Clone)]
pub struct Topic {
    pub name: String,
    pub partitions: i32,
    /// End offset of each partition once filled.
    pub end: Vec<i64>,
    /// The first and last message timestamps (ms since the epoch) put in.
    pub stamped: Option<(i64, i64)>,
}

impl Topic {
    /// The message time the topic spans, first timestamp to last.
    pub fn stamped_s(&self) -> f64 {
        self.stamped.map_or(0.0, |(a, b)| (b - a) as f64 / 1000.0)
    }
}

struct FillContext {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for FillContext {}

impl ProducerContext for FillContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

pub struct Kafka {
    pub brokers: String,
    runtime: tokio::runtime::Runtime,
    admin: AdminClient<DefaultClientContext>,
    /// Topics this run created; deleted at the end unless --keep-topics.
    created: Vec<String>,
}

impl Kafka {
    pub fn new(brokers: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the admin client");
        let admin = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .expect("create the admin client");
        Kafka {
            brokers: brokers.to_string(),
            runtime,
            admin,
            created: Vec::new(),
        }
    }

    pub fn create_topic(&mut self, name: &str, partitions: i32) -> Result<Topic, String> {
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = self
            .runtime
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(60),
                    self.admin.create_topics([&topic], &opts),
                )
                .await
            })
            .map_err(|_| format!("creating topic {name}: no answer within 60 s"))?
            .map_err(|e| format!("creating topic {name}: {e}"))?;
        for r in results {
            r.map_err(|(t, e)| format!("creating topic {t}: {e}"))?;
        }
        self.created.push(name.to_string());
        Ok(Topic {
            name: name.to_string(),
            partitions,
            end: vec![0; partitions as usize],
            stamped: None,
        })
    }

    pub fn delete_topics(&mut self) {
        if self.created.is_empty() {
            return;
        }
        let names: Vec<&str> = self.created.iter().map(String::as_str).collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let outcome = self.runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(60),
                self.admin.delete_topics(&names, &opts),
            )
            .await
        });
        match outcome {
            Ok(Ok(results)) => {
                let failed: Vec<String> = results
                    .into_iter()
                    .filter_map(|r| r.err().map(|(t, e)| format!("{t}: {e}")))
                    .collect();
                if !failed.is_empty() {
                    eprintln!("e2e: could not delete topics: {}", failed.join(", "));
                }
            }
            Ok(Err(e)) => eprintln!("e2e: could not delete topics: {e}"),
            Err(_) => eprintln!("e2e: deleting topics: no answer within 60 s"),
        }
        self.created.clear();
    }

    /// A reader of `group`'s committed offsets.
    pub fn offsets(&self, group: &str) -> Result<OffsetReader, String> {
        OffsetReader::new(&self.brokers, group)
    }

    /// (low, high) watermarks of every partition.
    pub fn watermarks(&self, topic: &str, partitions: i32) -> Result<Vec<(i64, i64)>, String> {
        self.offsets("tailgate-e2e-watermarks")?
            .watermarks(topic, partitions)
    }

    /// Produces `messages` to `topic` (one batch, progress on stderr) and
    /// records the partitions' end offsets.
    ///
    /// The messages of one trace (consecutive, one key) carry one timestamp,
    /// as an exporter producing a batch at once stamps them, and the
    /// producer is idempotent, so a retry (the first requests to a topic
    /// just created can fail) does not put a message behind later ones. So
    /// within each partition the timestamps never go back and a trace's
    /// messages are at one instant: the stream clock has no reason to split
    /// a trace. (With `after_root` of 20 ms and without these two, it did: a
    /// fill thread descheduled for 52 ms between two messages of a trace,
    /// and a partition whose first 3 000 messages were appended after later
    /// ones stamped up to 167 ms later.)
    ///
    /// With `rate` > 0 the traces are stamped `1 / rate` seconds apart, the
    /// last one now, as if written at `rate` traces a second; with 0, when
    /// each trace's first message is produced (a burst: a million messages
    /// in about a second).
    pub fn fill(
        &self,
        topic: &mut Topic,
        messages: &[(String, Vec<u8>)],
        rate: f64,
    ) -> Result<(), String> {
        let producer: ThreadedProducer<FillContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            // The Collector's Kafka exporter compresses nothing by default.
            .set("compression.type", "none")
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .create_with_context(FillContext {
                delivered: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                first_error: Mutex::new(None),
            })
            .map_err(|e| format!("create the fill producer: {e}"))?;
        let bar = progress(messages.len() as u64, &format!("fill {}", topic.name));
        let started = Instant::now();
        let deadline = started + Duration::from_secs(600);
        let now_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        };
        let traces = messages
            .iter()
            .enumerate()
            .filter(|(i, (key, _))| *i == 0 || messages[i - 1].0 != *key)
            .count();
        // The first trace's stamp, in ms, when stamping at `rate`.
        let first = now_ms() as f64 - traces.saturating_sub(1) as f64 * 1000.0 / rate.max(1e-9);
        let mut trace: Option<(&str, i64)> = None;
        let mut k = 0usize;
        let mut stamps: Option<(i64, i64)> = None;
        for (i, (key, payload)) in messages.iter().enumerate() {
            let stamp = match trace {
                Some((key_of, stamp)) if key_of == key.as_str() => stamp,
                _ => {
                    let stamp = if rate > 0.0 {
                        (first + k as f64 * 1000.0 / rate) as i64
                    } else {
                        now_ms()
                    };
                    k += 1;
                    trace = Some((key.as_str(), stamp));
                    stamps = Some(stamps.map_or((stamp, stamp), |(a, _)| (a, stamp)));
                    stamp
                }
            };
            let mut record = BaseRecord::to(&topic.name)
                .key(key)
                .payload(payload)
                .timestamp(stamp);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        if Instant::now() > deadline {
                            return Err(format!(
                                "filling {}: queue full for 10 minutes",
                                topic.name
                            ));
                        }
                        record = r;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err((e, _)) => return Err(format!("filling {}: {e}", topic.name)),
                }
            }
            if i % 4096 == 0 {
                bar.set_position(i as u64);
            }
        }
        producer
            .flush(Duration::from_secs(300))
            .map_err(|e| format!("filling {}: flush: {e}", topic.name))?;
        bar.finish_and_clear();
        let ctx = producer.context();
        let failed = ctx.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = ctx.first_error.lock().ok().and_then(|f| f.clone());
            return Err(format!(
                "filling {}: {failed} messages not delivered (first error: {})",
                topic.name,
                first.unwrap_or_default()
            ));
        }
        let marks = self.watermarks(&topic.name, topic.partitions)?;
        topic.end = marks.iter().map(|(_, h)| *h).collect();
        let total: i64 = marks.iter().map(|(l, h)| h - l).sum();
        let expected = topic.end.iter().sum::<i64>();
        if total != expected {
            return Err(format!("{}: low watermarks are not 0", topic.name));
        }
        if let Some((a, b)) = stamps {
            topic.stamped = Some(topic.stamped.map_or((a, b), |(first, _)| (first, b)));
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "e2e: filled {} ({}): {} messages in {secs:.1} s ({:.0} messages/s), stamped over {:.1} s",
            topic.name,
            partitions(topic.partitions),
            messages.len(),
            messages.len() as f64 / secs,
            stamps.map_or(0.0, |(a, b)| (b - a) as f64 / 1000.0)
        );
        Ok(())
    }

    /// Every committed message of `topic`, from the start to the current
    /// end. Read committed, and done once the reader's position is at the
    /// end: an exactly-once output's last offsets are transaction markers,
    /// which no message reports.
    pub fn read_all(&self, topic: &str, partitions: i32) -> Result<Vec<Keyed>, String> {
        let marks = self.watermarks(topic, partitions)?;
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", "tailgate-e2e-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| format!("reading {topic}: {e}"))?;
        let mut tpl = TopicPartitionList::new();
        for (p, (low, _)) in marks.iter().enumerate() {
            tpl.add_partition_offset(topic, p as i32, Offset::Offset(*low))
                .map_err(|e| format!("reading {topic}: {e}"))?;
        }
        c.assign(&tpl)
            .map_err(|e| format!("reading {topic}: {e}"))?;
        let mut next: Vec<i64> = marks.iter().map(|(l, _)| *l).collect();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        while next.iter().zip(&marks).any(|(n, (_, h))| n < h) {
            if Instant::now() > deadline {
                return Err(format!(
                    "reading {topic}: not at the end within 300 s ({next:?} of {marks:?})"
                ));
            }
            let Some(r) = c.poll(Duration::from_millis(200)) else {
                if let Ok(position) = c.position() {
                    for e in position.elements() {
                        if let (Offset::Offset(o), Some(n)) =
                            (e.offset(), next.get_mut(e.partition() as usize))
                        {
                            *n = (*n).max(o);
                        }
                    }
                }
                continue;
            };
            let m = r.map_err(|e| format!("reading {topic}: {e}"))?;
            next[m.partition() as usize] = m.offset() + 1;
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
        Ok(out)
    }
}

fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "e2e: {msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// "1 partition", "4 partitions".
pub fn partitions(n: i32) -> String {
    if n == 1 {
        "1 partition".into()
    } else {
        format!("{n} partitions")
    }
}
