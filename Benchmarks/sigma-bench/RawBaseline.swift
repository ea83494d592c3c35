import CZeroMQ
import Foundation

/// The baseline: a bare libzmq REQ/REP loop over loopback TCP, with no Sigma code on the path. Client and
/// server each have a context (an I/O thread) of their own, as two processes would, and as Sigma's client
/// and server have. (The one place outside RPC that calls libzmq: it has to be raw to be a baseline.)
enum RawBaseline {
    /// Round trips of a bare REQ socket against a Sigma server at `endpoint`: `frames` is one request
    /// (header and body); the server's share of a Sigma call, without the client library.
    static func roundTrips(to endpoint: String, frames: [[UInt8]], count: Int) -> [Double] {
        let context = zmq_ctx_new()!
        defer { zmq_ctx_term(context) }
        let req = zmq_socket(context, ZMQ_REQ)!
        zmq_connect(req, endpoint)
        var reply = [UInt8](repeating: 0, count: 65536)
        var samples: [Double] = []
        samples.reserveCapacity(count)
        for _ in 0..<count {
            let started = DispatchTime.now().uptimeNanoseconds
            zmq_send(req, frames[0], frames[0].count, ZMQ_SNDMORE)
            zmq_send(req, frames[1], frames[1].count, 0)
            var more: Int32 = 1
            while more != 0 {
                zmq_recv(req, &reply, reply.count, 0)
                var size = MemoryLayout<Int32>.size
                zmq_getsockopt(req, ZMQ_RCVMORE, &more, &size)
            }
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - started) / 1000)
        }
        var linger: Int32 = 0
        zmq_setsockopt(req, ZMQ_LINGER, &linger, 4)
        zmq_close(req)
        return samples.sorted()
    }

    /// Round-trip latencies in microseconds, sorted.
    static func roundTrips(count: Int, payloadBytes: Int) -> [Double] {
        let serverContext = zmq_ctx_new()!
        let clientContext = zmq_ctx_new()!
        defer {
            zmq_ctx_term(clientContext)
            zmq_ctx_term(serverContext)
        }
        let rep = zmq_socket(serverContext, ZMQ_REP)!
        zmq_bind(rep, "tcp://127.0.0.1:*")
        var buffer = [CChar](repeating: 0, count: 256)
        var size = buffer.count
        zmq_getsockopt(rep, ZMQ_LAST_ENDPOINT, &buffer, &size)
        let endpoint = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let total = count
        let handle = RawSocket(pointer: rep)
        let server = Thread {
            let rep = handle.pointer
            var message = [UInt8](repeating: 0, count: 65536)
            for _ in 0..<total {
                let n = zmq_recv(rep, &message, message.count, 0)
                zmq_send(rep, message, Int(max(n, 0)), 0)
            }
            var linger: Int32 = 0
            zmq_setsockopt(rep, ZMQ_LINGER, &linger, 4)
            zmq_close(rep)
        }
        server.start()
        let req = zmq_socket(clientContext, ZMQ_REQ)!
        zmq_connect(req, endpoint)
        let payload = [UInt8](repeating: 7, count: payloadBytes)
        var reply = [UInt8](repeating: 0, count: 65536)
        var samples: [Double] = []
        samples.reserveCapacity(count)
        for _ in 0..<count {
            let started = DispatchTime.now().uptimeNanoseconds
            zmq_send(req, payload, payload.count, 0)
            zmq_recv(req, &reply, reply.count, 0)
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - started) / 1000)
        }
        var linger: Int32 = 0
        zmq_setsockopt(req, ZMQ_LINGER, &linger, 4)
        zmq_close(req)
        while !server.isFinished { usleep(1000) }
        return samples.sorted()
    }
}

/// Hands a socket to the thread that will own it.
struct RawSocket: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
}
