//! librdkafka's in-process mock cluster, for `slatrack demo` and fast tests: real client
//! protocol, no broker to install.

use super::ClientError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

pub struct MockKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl MockKafka {
    /// One broker with these topics: (name, partitions).
    pub fn start(topics: &[(&str, i32)]) -> Result<Self, ClientError> {
        let cluster = MockCluster::new(1)?;
        for (name, partitions) in topics {
            cluster.create_topic(name, *partitions, 1)?;
        }
        Ok(Self { cluster })
    }

    /// `bootstrap.servers` for clients of this cluster.
    pub fn brokers(&self) -> String {
        self.cluster.bootstrap_servers()
    }
}
