import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What a LISTEN stream delivers.
public enum StoreNotification: Sendable, Equatable {
    case notification(channel: String, payload: String)
    /// The listening connection is (again) established. Notifications sent while it was down are lost,
    /// so a consumer rereads the state it follows when it sees this (it comes first, too).
    case connected
}

extension Store {
    /// Notifications on `channels` (PostgreSQL LISTEN/NOTIFY), on a connection and thread of their own.
    /// The connection comes back by itself after PostgreSQL restarts; the stream ends when its consumer
    /// stops iterating.
    public func notifications(channels: [String]) throws -> AsyncStream<StoreNotification> {
        for channel in channels where !isSafeChannelName(channel) {
            throw StoreError(.invalidValue, "channel name '\(channel.prefix(64))' must be lower-case letters, digits and _")
        }
        let (stream, continuation) = AsyncStream<StoreNotification>.makeStream(bufferingPolicy: .bufferingNewest(100_000))
        let stop = StopFlag()
        continuation.onTermination = { _ in stop.set() }
        let conninfo = configuration.conninfo
        let logger = logger
        let thread = Thread {
            listenLoop(conninfo: conninfo, channels: channels, continuation: continuation, stop: stop, logger: logger)
        }
        thread.name = "pg-listen"
        thread.start()
        return stream
    }
}

final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .releasing) }
    var isSet: Bool { flag.load(ordering: .acquiring) }
}

private func isSafeChannelName(_ name: String) -> Bool {
    !name.isEmpty && name.utf8.count <= 63
        && name.utf8.allSatisfy { (97...122).contains($0) || (48...57).contains($0) || $0 == 95 }
}

private func listenLoop(
    conninfo: String, channels: [String], continuation: AsyncStream<StoreNotification>.Continuation,
    stop: StopFlag, logger: Logger
) {
    let connection = PGConnection(conninfo: conninfo)
    var backoffMs = 100
    while !stop.isSet {
        do {
            try connection.ensureConnected(sessionSetup: channels.map { "LISTEN \"\($0)\"" })
            backoffMs = 100
            continuation.yield(.connected)
            while !stop.isSet {
                var descriptor = pollfd(fd: connection.socket, events: Int16(POLLIN), revents: 0)
                let ready = poll(&descriptor, 1, 250)
                if ready < 0 && errno != EINTR { throw StoreError(.unavailable, "poll failed: \(errno)") }
                if ready > 0 {
                    for notification in try connection.consumeNotifications() { continuation.yield(notification) }
                }
            }
        } catch {
            logger.warning("LISTEN connection lost; reconnecting", metadata: ["error": "\(error)"])
            connection.close()
            var waited = 0
            while waited < backoffMs && !stop.isSet {
                usleep(50_000)
                waited += 50
            }
            backoffMs = min(backoffMs * 2, 2000)
        }
    }
    connection.close()
    continuation.finish()
}
