package bench

import (
	"context"
	"fmt"
	"net"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/kafka"
)

// KafkaPublisher returns a Config.Publish that produces each batch through
// a Kafka client, as one ProduceSync of its records (the client batches
// them as it does), and returns once every record is acknowledged.
func KafkaPublisher(cl *kgo.Client) func(ctx context.Context, stream string, msgs []client.Message) error {
	return func(ctx context.Context, stream string, msgs []client.Message) error {
		recs := make([]*kgo.Record, len(msgs))
		for i, m := range msgs {
			recs[i] = &kgo.Record{Topic: stream, Key: m.Key, Value: m.Value}
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return fmt.Errorf("kafka produce to %s: %w", stream, err)
		}
		return nil
	}
}

// ServeKafka also serves the Kafka protocol on a free loopback port, with
// the server's user, and returns its address.
func (s *Server) ServeKafka() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	ks, err := kafka.New(ln, kafka.Config{Vault: s.api.Vault, Storage: s.vault.Storage(), Users: s.users})
	if err != nil {
		ln.Close()
		return "", err
	}
	s.kafka = ks
	go ks.Serve()
	return ln.Addr().String(), nil
}
