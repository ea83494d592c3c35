/// A binary min-heap: the placement index keeps each domain's nodes in one, best first.
struct Heap<Element> {
    private(set) var elements: [Element] = []
    private let areInOrder: (Element, Element) -> Bool

    init(_ elements: [Element] = [], by areInOrder: @escaping (Element, Element) -> Bool) {
        self.areInOrder = areInOrder
        self.elements = elements
        if elements.count > 1 {
            for index in stride(from: elements.count / 2 - 1, through: 0, by: -1) { siftDown(index) }
        }
    }

    var isEmpty: Bool { elements.isEmpty }
    var count: Int { elements.count }
    var first: Element? { elements.first }

    mutating func push(_ element: Element) {
        elements.append(element)
        siftUp(elements.count - 1)
    }

    @discardableResult
    mutating func popFirst() -> Element? {
        guard !elements.isEmpty else { return nil }
        elements.swapAt(0, elements.count - 1)
        let first = elements.removeLast()
        if !elements.isEmpty { siftDown(0) }
        return first
    }

    private mutating func siftUp(_ start: Int) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            guard areInOrder(elements[child], elements[parent]) else { return }
            elements.swapAt(child, parent)
            child = parent
        }
    }

    private mutating func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            guard left < elements.count else { return }
            var best = left
            if left + 1 < elements.count && areInOrder(elements[left + 1], elements[left]) { best = left + 1 }
            guard areInOrder(elements[best], elements[parent]) else { return }
            elements.swapAt(best, parent)
            parent = best
        }
    }
}
