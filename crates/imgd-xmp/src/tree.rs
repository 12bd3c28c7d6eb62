//! An XML document as a tree that writes back what it does not understand as it was read:
//! element and attribute names keep their prefixes, and comments, processing instructions
//! (`<?xpacket …?>`) and CDATA sections are kept as events. Namespaces are resolved on demand
//! through a [`Scope`], so that `dc:subject` is found whatever prefix a program bound to the
//! Dublin Core namespace.

use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};

/// A node of the tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// An element.
    Element(Element),
    /// Character data, unescaped.
    Text(String),
    /// Anything else, written back unchanged.
    Other(Event<'static>),
}

/// An element: its qualified name as written, its attributes (values unescaped) in order, and
/// its children.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Element {
    /// The name with its prefix (`dc:subject`).
    pub name: String,
    /// Attributes, names with their prefixes.
    pub attributes: Vec<(String, String)>,
    /// Child nodes.
    pub children: Vec<Node>,
}

impl Element {
    /// An element without attributes or children.
    pub fn new(name: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            ..Element::default()
        }
    }

    /// With an attribute added.
    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.push((name.into(), value.into()));
        self
    }

    /// With a child element added.
    pub fn with_child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// With text content.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// The child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|node| match node {
            Node::Element(element) => Some(element),
            _ => None,
        })
    }

    /// The child elements, mutably.
    pub fn elements_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|node| match node {
            Node::Element(element) => Some(element),
            _ => None,
        })
    }

    /// The concatenated text of its text children.
    pub fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|node| match node {
                Node::Text(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The value of the attribute named `name` as written.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The namespace bindings in force at one element: (prefix, URI), innermost last; the
/// default namespace has the empty prefix.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    bindings: Vec<(String, String)>,
}

impl Scope {
    /// The scope inside `element`: this one and its `xmlns` declarations.
    pub fn enter(&self, element: &Element) -> Scope {
        let mut inner = self.clone();
        for (name, value) in &element.attributes {
            if name == "xmlns" {
                inner.bindings.push((String::new(), value.clone()));
            } else if let Some(prefix) = name.strip_prefix("xmlns:") {
                inner.bindings.push((prefix.to_string(), value.clone()));
            }
        }
        inner
    }

    /// The URI `prefix` is bound to.
    pub fn uri(&self, prefix: &str) -> Option<&str> {
        self.bindings
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, uri)| uri.as_str())
    }

    /// A prefix bound to `uri` here (one not shadowed by an inner binding).
    pub fn prefix_of(&self, uri: &str) -> Option<&str> {
        self.bindings
            .iter()
            .rev()
            .find(|(p, u)| u == uri && !p.is_empty() && self.uri(p) == Some(uri))
            .map(|(p, _)| p.as_str())
    }

    /// Whether the element name `name` is `local` in namespace `uri`.
    pub fn is_element(&self, name: &str, uri: &str, local: &str) -> bool {
        match name.split_once(':') {
            Some((prefix, l)) => l == local && self.uri(prefix) == Some(uri),
            None => name == local && self.uri("") == Some(uri),
        }
    }

    /// Whether the attribute name `name` is `local` in namespace `uri` (an attribute without a
    /// prefix is in no namespace).
    pub fn is_attribute(&self, name: &str, uri: &str, local: &str) -> bool {
        name.split_once(':')
            .is_some_and(|(prefix, l)| l == local && self.uri(prefix) == Some(uri))
    }

    /// The namespace URI of an element name.
    pub fn element_uri(&self, name: &str) -> Option<&str> {
        match name.split_once(':') {
            Some((prefix, _)) => self.uri(prefix),
            None => self.uri(""),
        }
    }

    /// The namespace URI of an attribute name (`None` without a prefix, and for `xmlns`).
    pub fn attribute_uri(&self, name: &str) -> Option<&str> {
        let (prefix, _) = name.split_once(':')?;
        if prefix == "xmlns" {
            return None;
        }
        self.uri(prefix)
    }
}

/// Parses a document into its top-level nodes.
pub fn parse(text: &str) -> Result<Vec<Node>, String> {
    let mut reader = Reader::from_str(text);
    let mut open: Vec<Element> = Vec::new();
    let mut top: Vec<Node> = Vec::new();
    let push = |open: &mut Vec<Element>, top: &mut Vec<Node>, node: Node| match open.last_mut() {
        Some(parent) => parent.children.push(node),
        None => top.push(node),
    };
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("at byte {}: {e}", reader.error_position()))?;
        match event {
            Event::Start(start) => open.push(element_of(&start)?),
            Event::Empty(start) => {
                let element = element_of(&start)?;
                push(&mut open, &mut top, Node::Element(element));
            }
            Event::End(_) => {
                let element = open.pop().ok_or("a closing tag closes nothing")?;
                push(&mut open, &mut top, Node::Element(element));
            }
            Event::Text(text) => {
                let text = text.unescape().map_err(|e| e.to_string())?.into_owned();
                push(&mut open, &mut top, Node::Text(text));
            }
            Event::Eof => break,
            other => push(&mut open, &mut top, Node::Other(other.into_owned())),
        }
    }
    if let Some(element) = open.last() {
        return Err(format!("<{}> is never closed", element.name));
    }
    if !top.iter().any(|node| matches!(node, Node::Element(_))) {
        return Err("no element".to_string());
    }
    Ok(top)
}

fn element_of(start: &BytesStart<'_>) -> Result<Element, String> {
    let name = String::from_utf8(start.name().as_ref().to_vec()).map_err(|e| e.to_string())?;
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| e.to_string())?;
        let key = String::from_utf8(attribute.key.as_ref().to_vec()).map_err(|e| e.to_string())?;
        let value = attribute
            .unescape_value()
            .map_err(|e| e.to_string())?
            .into_owned();
        attributes.push((key, value));
    }
    Ok(Element {
        name,
        attributes,
        children: Vec::new(),
    })
}

/// Writes the nodes as a document.
pub fn write(nodes: &[Node]) -> String {
    let mut writer = Writer::new(Vec::new());
    for node in nodes {
        write_node(&mut writer, node);
    }
    // Every event written is well-formed UTF-8 made from strings.
    String::from_utf8(writer.into_inner()).unwrap_or_default()
}

fn write_node(writer: &mut Writer<Vec<u8>>, node: &Node) {
    // Writing into a Vec cannot fail.
    let _ = match node {
        Node::Element(element) => {
            let mut start = BytesStart::new(element.name.as_str());
            for (name, value) in &element.attributes {
                start.push_attribute((name.as_str(), value.as_str()));
            }
            if element.children.is_empty() {
                writer.write_event(Event::Empty(start))
            } else {
                let _ = writer.write_event(Event::Start(start));
                for child in &element.children {
                    write_node(writer, child);
                }
                writer.write_event(Event::End(BytesEnd::new(element.name.as_str())))
            }
        }
        Node::Text(text) => writer.write_event(Event::Text(BytesText::new(text))),
        Node::Other(event) => writer.write_event(event.clone()),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_round_trips_with_prefixes_comments_and_entities() {
        let text = "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n\
                    <x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><!-- kept -->\
                    <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\
                    <rdf:Description rdf:about=\"\" xmlns:d=\"http://purl.org/dc/elements/1.1/\" \
                    d:format=\"a &amp; b\"><d:title>Tom &lt;3 &#233;</d:title>\
                    </rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end=\"w\"?>";
        let nodes = parse(text).unwrap();
        assert_eq!(parse(&write(&nodes)).unwrap(), nodes);
        let Node::Element(meta) = &nodes[2] else {
            panic!("{nodes:?}")
        };
        let scope = Scope::default().enter(meta);
        let rdf = meta.elements().next().unwrap();
        let scope = scope.enter(rdf);
        let description = rdf.elements().next().unwrap();
        let scope = scope.enter(description);
        assert!(scope.is_element(&description.name, crate::RDF, "Description"));
        let title = description.elements().next().unwrap();
        assert!(scope.is_element(&title.name, crate::DC, "title"));
        assert_eq!(title.text(), "Tom <3 é");
        assert_eq!(description.attribute("d:format"), Some("a & b"));
        assert!(scope.is_attribute("d:format", crate::DC, "format"));
        assert_eq!(scope.prefix_of(crate::DC), Some("d"));
    }

    #[test]
    fn broken_documents_are_errors() {
        for text in ["", "not xml", "<a><b></a>", "<a>", "<a x=\"1></a>"] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }
}
