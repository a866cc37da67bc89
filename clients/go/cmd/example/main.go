// Command example is the example every gridmesh client has, in Go over gRPC:
// submit a word count and watch it, download its result, read a bad
// request's field violation, and publish and consume an entity event.
//
// The mesh comes from the environment: GRIDMESH_EDGE (host:port),
// GRIDMESH_CA_FILE, GRIDMESH_API_KEY (a submitter key),
// GRIDMESH_PUBLISHER(_KEY), GRIDMESH_SUBSCRIBER(_KEY) (subscribed to the
// publisher's "customer" events) and GRIDMESH_TEXT. Each step prints one JSON
// line on stdout; a failure prints why on stderr and exits 1.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	gridmeshv1 "github.com/gridmesh/gridmesh/clients/go/gen/gridmesh/v1"
	"github.com/gridmesh/gridmesh/clients/go/gridmesh"
)

// Every call has a deadline. Streams get longer ones: a task may queue and
// run for a while, and a consumer waits for the event to reach its queue.
const (
	callTimeout    = 30 * time.Second
	watchTimeout   = 2 * time.Minute
	consumeTimeout = time.Minute
	resultDir      = "clients-go"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "gridmesh example: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	env, err := readEnv("GRIDMESH_EDGE", "GRIDMESH_CA_FILE", "GRIDMESH_API_KEY", "GRIDMESH_PUBLISHER",
		"GRIDMESH_PUBLISHER_KEY", "GRIDMESH_SUBSCRIBER", "GRIDMESH_SUBSCRIBER_KEY", "GRIDMESH_TEXT")
	if err != nil {
		return err
	}
	// One connection per API key: the key is the caller's identity and role.
	dial := func(key string) (*grpc.ClientConn, error) {
		return gridmesh.Dial(env["GRIDMESH_EDGE"], env["GRIDMESH_CA_FILE"], env[key])
	}
	submitter, err := dial("GRIDMESH_API_KEY")
	if err != nil {
		return err
	}
	defer submitter.Close()
	scheduler := gridmeshv1.NewSchedulerClient(submitter)

	task, err := submit(scheduler, env["GRIDMESH_TEXT"])
	if err != nil {
		return err
	}
	emit("submitted", map[string]any{"task_id": task.GetTaskId()})

	states, err := watch(scheduler, task.GetTaskId())
	if err != nil {
		return fmt.Errorf("watching task %s: %w", task.GetTaskId(), err)
	}
	emit("watched", map[string]any{"states": states})
	if last := states[len(states)-1]; last != gridmeshv1.TaskState_SUCCEEDED.String() {
		return fmt.Errorf("task %s ended %s", task.GetTaskId(), last)
	}

	body, err := download(gridmeshv1.NewStoreKeeperClient(submitter), task.GetTaskId())
	if err != nil {
		return fmt.Errorf("downloading the result of task %s: %w", task.GetTaskId(), err)
	}
	var result map[string]any
	if err := json.Unmarshal(body, &result); err != nil {
		return fmt.Errorf("the result of task %s is no JSON object: %w", task.GetTaskId(), err)
	}
	digest := sha256.Sum256(body)
	emit("downloaded", map[string]any{"bytes": len(body), "sha256": hex.EncodeToString(digest[:]), "result": result})

	if err := refused(scheduler); err != nil {
		return err
	}

	publisher, err := dial("GRIDMESH_PUBLISHER_KEY")
	if err != nil {
		return err
	}
	defer publisher.Close()
	entityID := uuid.NewString()
	if err := publish(gridmeshv1.NewEventManagerClient(publisher), env["GRIDMESH_PUBLISHER"], entityID); err != nil {
		return fmt.Errorf("publishing a customer event: %w", err)
	}
	emit("published", map[string]any{"entity_id": entityID, "version": 1})

	subscriber, err := dial("GRIDMESH_SUBSCRIBER_KEY")
	if err != nil {
		return err
	}
	defer subscriber.Close()
	event, err := consume(gridmeshv1.NewEventManagerClient(subscriber), env["GRIDMESH_SUBSCRIBER"], entityID)
	if err != nil {
		return fmt.Errorf("consuming the customer event %s: %w", entityID, err)
	}
	emit("consumed", map[string]any{
		"entity_id": event.GetEntityId(),
		"operation": event.GetOperation().String(),
		"payload":   gridmesh.ToMap(event.GetPayload()), // 42, not 42.0
	})
	return nil
}

// submit submits a word count of text; its params are a google.protobuf.Struct.
func submit(scheduler gridmeshv1.SchedulerClient, text string) (*gridmeshv1.Task, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	task, err := scheduler.SubmitTask(ctx, &gridmeshv1.SubmitTaskRequest{
		TaskType:  "word_count",
		Params:    gridmesh.MustStruct(map[string]any{"text": text}),
		ResultDir: resultDir,
	})
	if err != nil {
		return nil, fmt.Errorf("submitting the word count: %w", err)
	}
	return task, nil
}

// watch follows the task to a terminal state: the names of its states as
// they arrive (its state now, then each change).
func watch(scheduler gridmeshv1.SchedulerClient, taskID string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), watchTimeout)
	defer cancel() // also ends the stream if we stop reading first
	stream, err := scheduler.WatchTask(ctx, &gridmeshv1.WatchTaskRequest{TaskId: taskID})
	if err != nil {
		return nil, err
	}
	var states []string
	for {
		event, err := stream.Recv()
		if err != nil { // io.EOF too: the stream ended before a terminal state
			return states, fmt.Errorf("after %v: %w", states, err)
		}
		state := event.GetTask().GetState()
		states = append(states, state.String())
		switch state {
		case gridmeshv1.TaskState_SUCCEEDED, gridmeshv1.TaskState_FAILED, gridmeshv1.TaskState_CANCELLED:
			return states, nil
		}
	}
}

// download reads the task's result: a stream of google.api.HttpBody chunks.
func download(storeKeeper gridmeshv1.StoreKeeperClient, taskID string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	stream, err := storeKeeper.GetResult(ctx, &gridmeshv1.GetResultRequest{TaskId: taskID})
	if err != nil {
		return nil, err
	}
	var body []byte
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return body, nil
		}
		if err != nil {
			return nil, err
		}
		body = append(body, chunk.GetData()...)
	}
}

// refused submits a word count whose text is a number and prints what the
// edge's INVALID_ARGUMENT says about it (its google.rpc.BadRequest detail).
func refused(scheduler gridmeshv1.SchedulerClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := scheduler.SubmitTask(ctx, &gridmeshv1.SubmitTaskRequest{
		TaskType:  "word_count",
		Params:    gridmesh.MustStruct(map[string]any{"text": 5}),
		ResultDir: resultDir,
	})
	if err == nil {
		return errors.New("a word_count with a number for its text was accepted")
	}
	violations := gridmesh.FieldViolations(err)
	if len(violations) == 0 {
		return fmt.Errorf("submitting a word count whose text is a number: %w", err) // refused, but not for a field
	}
	emit("refused", map[string]any{
		"code":        gridmesh.CodeName(err),
		"field":       violations[0].GetField(),
		"description": violations[0].GetDescription(),
	})
	return nil
}

// publish publishes version 1 of a new customer as publisher.
func publish(events gridmeshv1.EventManagerClient, publisher, entityID string) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := events.Publish(ctx, &gridmeshv1.EntityEvent{
		EventId:    uuid.NewString(), // what the mesh de-duplicates on
		Publisher:  publisher,
		EntityType: "customer",
		EntityId:   entityID,
		Operation:  gridmeshv1.Operation_CREATE,
		Version:    1,
		Payload:    gridmesh.MustStruct(map[string]any{"name": "Ada", "credit": 42}),
		OccurredAt: timestamppb.Now(),
	})
	return err
}

// consume reads subscriber's deliveries until the event of entityID comes,
// acknowledging each one, and then closes the stream. Consume is a bidi
// stream: ConsumeStart first, then an Ack per delivery.
func consume(events gridmeshv1.EventManagerClient, subscriber, entityID string) (*gridmeshv1.EntityEvent, error) {
	ctx, cancel := context.WithTimeout(context.Background(), consumeTimeout)
	defer cancel()
	stream, err := events.Consume(ctx)
	if err != nil {
		return nil, err
	}
	start := &gridmeshv1.ConsumeStart{Subscriber: subscriber, Prefetch: 16}
	if err := send(stream, &gridmeshv1.ConsumeRequest{Kind: &gridmeshv1.ConsumeRequest_Start{Start: start}}); err != nil {
		return nil, err
	}
	var ours *gridmeshv1.EntityEvent
	for {
		delivery, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if ours != nil {
			continue // sent before the server saw us close: unacknowledged, so its queue keeps it
		}
		ack := &gridmeshv1.Ack{DeliveryId: delivery.GetDeliveryId()}
		if err := send(stream, &gridmeshv1.ConsumeRequest{Kind: &gridmeshv1.ConsumeRequest_Ack{Ack: ack}}); err != nil {
			return nil, err
		}
		if delivery.GetEvent().GetEntityId() == entityID {
			ours = delivery.GetEvent()
			// Half-close rather than cancel: the server applies the acks it
			// got, then ends the stream, which Recv reads as io.EOF.
			if err := stream.CloseSend(); err != nil {
				return nil, err
			}
		}
	}
	if ours == nil {
		return nil, errors.New("the stream ended before the event arrived")
	}
	return ours, nil
}

// send sends on a Consume stream. io.EOF means the server has ended the
// stream: the next Recv returns why, so it is no error here.
func send(stream gridmeshv1.EventManager_ConsumeClient, request *gridmeshv1.ConsumeRequest) error {
	if err := stream.Send(request); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// emit prints one step as a line of JSON on stdout.
func emit(step string, fields map[string]any) {
	fields["step"] = step
	line, err := json.Marshal(fields)
	if err != nil {
		panic(err) // only ever given maps of JSON values
	}
	fmt.Println(string(line))
}

// readEnv is the named environment variables, all of which must be set.
func readEnv(names ...string) (map[string]string, error) {
	env := make(map[string]string, len(names))
	for _, name := range names {
		if env[name] = os.Getenv(name); env[name] == "" {
			return nil, fmt.Errorf("%s is not set", name)
		}
	}
	return env, nil
}
