import Core
import Testing

@Suite struct ConfigTemplateTests {
    @Test(arguments: [
        "port={{host.ports.client}} ip={{instance.ip}} n={{instance.ordinal}} host={{host.ip}} {{app.name}} v{{config.version}}",
        "{{#peers}}server.{{ordinal}}={{ip}}:{{ports.peer}} {{host_ip}}{{^last}},{{/last}}{{/peers}}",
        "{{! a comment }}{{{instance.name}}}{{&instance.id}}",
        "{{#instance.ordinal}}not first{{/instance.ordinal}}",
        "no tags at all",
    ])
    func accepts(_ text: String) {
        #expect(ConfigTemplate.problems(in: text).isEmpty)
    }

    @Test(arguments: [
        ("{{instance.port}}", "instance.port"),
        ("{{ip}}", "ip"),
        ("{{peers}}", "peers"),
        ("{{#peers}}{{ip}}", "#peers"),
        ("{{#peers}}{{/instance}}", "/instance"),
        ("{{> partial}}", "> partial"),
        ("{{=<% %>=}}", "=<% %>="),
        ("{{.}}", "."),
        ("{{host.ports.Bad_Name}}", "host.ports.Bad_Name"),
        ("{{instance.ip", "{{instance.ip"),
    ])
    func refuses(_ text: String, _ variable: String) {
        #expect(ConfigTemplate.problems(in: text).first?.variable == variable, "\(ConfigTemplate.problems(in: text))")
    }
}
