//! Merging imgd's results into an XMP packet.
//!
//! imgd owns, in a sidecar: every property of its own namespace; the `dc:subject` keywords it
//! added (listed in `imgd:Keywords`); the `lr:hierarchicalSubject` keywords under `imgd|`; the
//! face regions it added (listed in `imgd:Regions`); and `dc:description` and `xmp:Rating` when
//! it wrote them (recorded in `imgd:Caption` and `imgd:Rating`) and nobody changed them since.
//! A rewrite removes what imgd owns and adds the new results; everything else, whoever wrote
//! it, stays as it was, with its prefixes, order and comments.

use crate::tree::{self, Element, Node, Scope};
use crate::{DC, IMGD, LR, MWG_RS, RDF, ST_AREA, ST_DIM, SidecarContent, X, XMP};

/// `content` merged into the packet `existing` (a new packet when `None`).
pub fn merge(existing: Option<&str>, content: &SidecarContent) -> Result<String, String> {
    let mut nodes = match existing {
        Some(text) => tree::parse(text)?,
        None => skeleton(),
    };
    let rdf_path =
        find(&nodes, &Scope::default(), RDF, "RDF").ok_or("no rdf:RDF element: not XMP")?;
    let rdf_scope = scope_at(&nodes, &rdf_path);
    let rdf = element_at(&mut nodes, &rdf_path);
    let rdf_prefix = rdf_scope.prefix_of(RDF).unwrap_or("rdf").to_string();
    if !rdf
        .elements()
        .any(|e| rdf_scope.is_element(&e.name, RDF, "Description"))
    {
        let description = Element::new(format!("{rdf_prefix}:Description"))
            .with_attribute(format!("{rdf_prefix}:about"), "");
        rdf.children.push(Node::Element(description));
    }
    consolidate(rdf, &rdf_scope);
    let target = descriptions(rdf, &rdf_scope)
        .next()
        .ok_or("no rdf:Description")?;
    let scope = rdf_scope.enter(target);
    let mut record = Record::default();
    record.read(target, &scope);
    record.remove_owned(target, &scope);
    let mut existing = Existing::default();
    existing.read(target, &scope);
    Adder::new(target, &rdf_scope, rdf_prefix).add(content, &existing);
    collapse_whitespace(&mut target.children);
    Ok(tree::write(&nodes))
}

/// Moves the properties of every `rdf:Description` into the first (one subject, so the same
/// statements), so that a property is found, replaced or added in one place. Left as it is when
/// two descriptions bind one prefix to different namespaces.
fn consolidate(rdf: &mut Element, scope: &Scope) {
    let indices: Vec<usize> = rdf
        .children
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match n {
            Node::Element(e) if scope.is_element(&e.name, RDF, "Description") => Some(i),
            _ => None,
        })
        .collect();
    if indices.len() < 2 {
        return;
    }
    let mut bindings: Vec<(String, String)> = Vec::new();
    for &i in &indices {
        let Node::Element(description) = &rdf.children[i] else {
            continue;
        };
        for (name, value) in &description.attributes {
            if let Some(prefix) = name.strip_prefix("xmlns:") {
                if bindings.iter().any(|(p, v)| p == prefix && v != value) {
                    return;
                }
                bindings.push((prefix.to_string(), value.clone()));
            }
        }
    }
    let mut moved_attributes = Vec::new();
    let mut moved_children = Vec::new();
    for &i in indices[1..].iter().rev() {
        let Node::Element(description) = rdf.children.remove(i) else {
            continue;
        };
        let inner = scope.enter(&description);
        moved_attributes.extend(
            description
                .attributes
                .into_iter()
                .filter(|(name, _)| !inner.is_attribute(name, RDF, "about")),
        );
        moved_children.extend(description.children);
    }
    if let Node::Element(first) = &mut rdf.children[indices[0]] {
        for attribute in moved_attributes {
            if !first.attributes.contains(&attribute) {
                first.attributes.push(attribute);
            }
        }
        first.children.extend(moved_children);
    }
}

/// A new, empty packet.
fn skeleton() -> Vec<Node> {
    use quick_xml::events::{BytesPI, Event};
    let rdf = Element::new("rdf:RDF").with_attribute("xmlns:rdf", RDF);
    let meta = Element::new("x:xmpmeta")
        .with_attribute("xmlns:x", X)
        .with_attribute("x:xmptk", "imgd")
        .with_child(rdf);
    vec![
        Node::Other(Event::PI(BytesPI::new(
            "xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"",
        ))),
        Node::Text("\n".into()),
        Node::Element(meta),
        Node::Text("\n".into()),
        Node::Other(Event::PI(BytesPI::new("xpacket end=\"w\""))),
    ]
}

/// The path (child indices) of the first element `local` of namespace `uri`.
fn find(nodes: &[Node], scope: &Scope, uri: &str, local: &str) -> Option<Vec<usize>> {
    for (i, node) in nodes.iter().enumerate() {
        let Node::Element(element) = node else {
            continue;
        };
        let inner = scope.enter(element);
        if inner.is_element(&element.name, uri, local) {
            return Some(vec![i]);
        }
        if let Some(mut path) = find(&element.children, &inner, uri, local) {
            path.insert(0, i);
            return Some(path);
        }
    }
    None
}

/// The scope inside the element at `path`.
fn scope_at(nodes: &[Node], path: &[usize]) -> Scope {
    let mut scope = Scope::default();
    let mut level = nodes;
    for &i in path {
        if let Some(Node::Element(element)) = level.get(i) {
            scope = scope.enter(element);
            level = &element.children;
        }
    }
    scope
}

/// The element at `path` (found by [`find`]).
fn element_at<'a>(nodes: &'a mut [Node], path: &[usize]) -> &'a mut Element {
    let (first, rest) = path.split_first().expect("a non-empty path");
    let Node::Element(element) = &mut nodes[*first] else {
        unreachable!("paths lead to elements")
    };
    if rest.is_empty() {
        element
    } else {
        element_at(&mut element.children, rest)
    }
}

/// The `rdf:Description` children of `rdf`.
fn descriptions<'a>(rdf: &'a mut Element, scope: &Scope) -> impl Iterator<Item = &'a mut Element> {
    let scope = scope.clone();
    rdf.elements_mut()
        .filter(move |e| scope.is_element(&e.name, RDF, "Description"))
}

/// A simple property's value: an attribute of `element`, or a child element's text.
fn simple_value(element: &Element, scope: &Scope, uri: &str, local: &str) -> Option<String> {
    if let Some((_, value)) = element
        .attributes
        .iter()
        .find(|(name, _)| scope.is_attribute(name, uri, local))
    {
        return Some(value.clone());
    }
    element
        .elements()
        .find(|e| scope.enter(e).is_element(&e.name, uri, local))
        .map(Element::text)
}

/// Removes a simple property (attribute or child elements).
fn remove_property(element: &mut Element, scope: &Scope, uri: &str, local: &str) {
    element
        .attributes
        .retain(|(name, _)| !scope.is_attribute(name, uri, local));
    element.children.retain(|node| match node {
        Node::Element(e) => !scope.enter(e).is_element(&e.name, uri, local),
        _ => true,
    });
}

/// The `rdf:li` texts of the array (Bag, Seq or Alt) inside property element `property`.
fn array_items(property: &Element, scope: &Scope) -> Vec<String> {
    let scope = scope.enter(property);
    property
        .elements()
        .flat_map(|array| {
            let scope = scope.enter(array);
            array
                .elements()
                .filter(|li| scope.is_element(&li.name, RDF, "li"))
                .map(Element::text)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The property elements `local` of namespace `uri` among `element`'s children.
fn properties<'a>(
    element: &'a mut Element,
    scope: &Scope,
    uri: &'a str,
    local: &'a str,
) -> impl Iterator<Item = &'a mut Element> {
    let scope = scope.clone();
    element
        .elements_mut()
        .filter(move |e| scope.enter(e).is_element(&e.name, uri, local))
}

/// Removes the `rdf:li` items of the arrays inside `property` whose text `drop` accepts.
fn remove_items(property: &mut Element, scope: &Scope, drop: impl Fn(&str) -> bool) {
    let scope = scope.enter(property);
    for array in property.elements_mut() {
        let scope = scope.enter(array);
        array.children.retain(|node| match node {
            Node::Element(li) if scope.is_element(&li.name, RDF, "li") => !drop(&li.text()),
            _ => true,
        });
    }
}

/// The element holding a structure's fields: `element` itself (`rdf:parseType="Resource"` or
/// fields as attributes), or its `rdf:Description` child.
fn struct_fields<'a>(element: &'a Element, scope: &Scope) -> (&'a Element, Scope) {
    let inner = scope.enter(element);
    match element
        .elements()
        .find(|e| inner.enter(e).is_element(&e.name, RDF, "Description"))
    {
        Some(description) => (description, inner.enter(description)),
        None => (element, inner),
    }
}

/// [`struct_fields`], mutably.
fn struct_fields_mut<'a>(element: &'a mut Element, scope: &Scope) -> (&'a mut Element, Scope) {
    let inner = scope.enter(element);
    let index = element.children.iter().position(
        |n| matches!(n, Node::Element(e) if inner.enter(e).is_element(&e.name, RDF, "Description")),
    );
    match index {
        Some(i) => {
            let Node::Element(description) = &mut element.children[i] else {
                unreachable!("the position of an element")
            };
            let scope = inner.enter(description);
            (description, scope)
        }
        None => (element, inner),
    }
}

/// A face region's identity across rewrites: its name and its area, rounded.
fn region_signature(li: &Element, scope: &Scope) -> Option<String> {
    let (fields, scope) = struct_fields(li, scope);
    let name = simple_value(fields, &scope, MWG_RS, "Name").unwrap_or_default();
    let area = fields
        .elements()
        .find(|e| scope.enter(e).is_element(&e.name, MWG_RS, "Area"))?;
    let (area, scope) = struct_fields(area, &scope);
    let number = |local: &str| -> Option<f64> {
        simple_value(area, &scope, ST_AREA, local)?
            .trim()
            .parse()
            .ok()
    };
    Some(signature(
        &name,
        [number("x")?, number("y")?, number("w")?, number("h")?],
    ))
}

fn signature(name: &str, area: [f64; 4]) -> String {
    format!(
        "{name}|{:.4}|{:.4}|{:.4}|{:.4}",
        area[0], area[1], area[2], area[3]
    )
}

/// The region list's array (`mwg-rs:Regions` / `mwg-rs:RegionList` / `rdf:Bag`) inside a
/// description, when it has one.
fn region_bag<'a>(description: &'a mut Element, scope: &Scope) -> Option<(&'a mut Element, Scope)> {
    let regions = properties(description, scope, MWG_RS, "Regions").next()?;
    let (fields, scope) = struct_fields_mut(regions, scope);
    let list = properties(fields, &scope, MWG_RS, "RegionList").next()?;
    let scope = scope.enter(list);
    let bag = list.elements_mut().next()?;
    let inner = scope.enter(bag);
    Some((bag, inner))
}

/// What imgd recorded in a sidecar the last time it wrote it.
#[derive(Debug, Default)]
struct Record {
    keywords: Vec<String>,
    regions: Vec<String>,
    caption: Option<String>,
    rating: Option<String>,
}

impl Record {
    fn read(&mut self, description: &Element, scope: &Scope) {
        for e in description.elements() {
            let inner = scope.enter(e);
            if inner.is_element(&e.name, IMGD, "Keywords") {
                self.keywords.extend(array_items(e, scope));
            } else if inner.is_element(&e.name, IMGD, "Regions") {
                self.regions.extend(array_items(e, scope));
            }
        }
        self.caption = self
            .caption
            .take()
            .or_else(|| simple_value(description, scope, IMGD, "Caption"));
        self.rating = self
            .rating
            .take()
            .or_else(|| simple_value(description, scope, IMGD, "Rating"));
    }

    /// Removes what imgd owns from one description.
    fn remove_owned(&self, description: &mut Element, scope: &Scope) {
        description
            .attributes
            .retain(|(name, _)| scope.attribute_uri(name) != Some(IMGD));
        description.children.retain(|node| match node {
            Node::Element(e) => scope.enter(e).element_uri(&e.name) != Some(IMGD),
            _ => true,
        });
        for subject in properties(description, scope, DC, "subject") {
            remove_items(subject, scope, |k| self.keywords.iter().any(|o| o == k));
        }
        for subject in properties(description, scope, LR, "hierarchicalSubject") {
            remove_items(subject, scope, |k| k.starts_with("imgd|"));
        }
        if let Some(caption) = &self.caption {
            let current: Vec<String> = properties(description, scope, DC, "description")
                .flat_map(|p| array_items(p, scope))
                .collect();
            if current.iter().all(|c| c == caption) {
                remove_property(description, scope, DC, "description");
            }
        }
        if let Some(rating) = &self.rating
            && simple_value(description, scope, XMP, "Rating").as_deref() == Some(rating)
        {
            remove_property(description, scope, XMP, "Rating");
        }
        let mut emptied = false;
        if let Some((bag, bag_scope)) = region_bag(description, scope) {
            bag.children.retain(|node| match node {
                Node::Element(li) if bag_scope.is_element(&li.name, RDF, "li") => {
                    let signature = region_signature(li, &bag_scope.enter(li));
                    !signature.is_some_and(|s| self.regions.contains(&s))
                }
                _ => true,
            });
            emptied = !self.regions.is_empty() && bag.elements().next().is_none();
        }
        // A region list left with none of another program's regions was imgd's own.
        if emptied {
            remove_property(description, scope, MWG_RS, "Regions");
        }
        collapse_whitespace(&mut description.children);
    }
}

/// What other programs left that imgd must not duplicate or override.
#[derive(Debug, Default)]
struct Existing {
    keywords: Vec<String>,
    hierarchical: Vec<String>,
    regions: Vec<String>,
    has_description: bool,
    has_rating: bool,
}

impl Existing {
    fn read(&mut self, description: &mut Element, scope: &Scope) {
        for e in description.elements() {
            let inner = scope.enter(e);
            if inner.is_element(&e.name, DC, "subject") {
                self.keywords.extend(array_items(e, scope));
            } else if inner.is_element(&e.name, LR, "hierarchicalSubject") {
                self.hierarchical.extend(array_items(e, scope));
            } else if inner.is_element(&e.name, DC, "description") {
                self.has_description = true;
            }
        }
        self.has_rating |= simple_value(description, scope, XMP, "Rating").is_some();
        if let Some((bag, bag_scope)) = region_bag(description, scope) {
            for li in bag.elements() {
                self.regions
                    .extend(region_signature(li, &bag_scope.enter(li)));
            }
        }
    }
}

/// Adds imgd's results to one description, declaring the namespaces it uses there.
struct Adder<'a> {
    target: &'a mut Element,
    scope: Scope,
    rdf: String,
}

impl<'a> Adder<'a> {
    fn new(target: &'a mut Element, rdf_scope: &Scope, rdf: String) -> Self {
        let scope = rdf_scope.enter(target);
        Adder { target, scope, rdf }
    }

    /// The prefix of `uri` here, declared on the target as `preferred` (or a free variant)
    /// when nothing binds it yet.
    fn prefix(&mut self, uri: &str, preferred: &str) -> String {
        if let Some(prefix) = self.scope.prefix_of(uri) {
            return prefix.to_string();
        }
        let mut prefix = preferred.to_string();
        let mut n = 1;
        while self.scope.uri(&prefix).is_some() {
            prefix = format!("{preferred}{n}");
            n += 1;
        }
        self.target
            .attributes
            .push((format!("xmlns:{prefix}"), uri.to_string()));
        self.scope = self
            .scope
            .enter(&Element::new("").with_attribute(format!("xmlns:{prefix}"), uri.to_string()));
        prefix
    }

    fn push(&mut self, element: Element) {
        self.target.children.push(Node::Text("\n".into()));
        self.target.children.push(Node::Element(element));
    }

    /// An array property `<p:local><rdf:Bag><rdf:li>…` of `items`.
    fn array(&self, name: String, kind: &str, items: &[String]) -> Element {
        let rdf = &self.rdf;
        let mut array = Element::new(format!("{rdf}:{kind}"));
        for item in items {
            array = array.with_child(Element::new(format!("{rdf}:li")).with_text(item.clone()));
        }
        Element::new(name).with_child(array)
    }

    /// Appends `items` to the existing array property `local` of `uri`, or adds one.
    fn append_items(&mut self, uri: &str, preferred: &str, local: &str, items: &[String]) {
        if items.is_empty() {
            return;
        }
        let rdf = self.rdf.clone();
        let scope = self.scope.clone();
        if let Some(property) = properties(self.target, &scope, uri, local).next()
            && let Some(array) = property.elements_mut().next()
        {
            for item in items {
                array.children.push(Node::Element(
                    Element::new(format!("{rdf}:li")).with_text(item.clone()),
                ));
            }
            return;
        }
        let prefix = self.prefix(uri, preferred);
        let element = self.array(format!("{prefix}:{local}"), "Bag", items);
        self.push(element);
    }

    fn add(&mut self, content: &SidecarContent, existing: &Existing) {
        let imgd = self.prefix(IMGD, "imgd");
        let added: Vec<String> = dedup(&content.keywords)
            .into_iter()
            .filter(|k| !existing.keywords.contains(k))
            .collect();
        self.append_items(DC, "dc", "subject", &added);
        let hierarchical: Vec<String> = dedup(&content.hierarchical)
            .into_iter()
            .filter(|k| !existing.hierarchical.contains(k))
            .collect();
        self.append_items(LR, "lr", "hierarchicalSubject", &hierarchical);
        if !added.is_empty() {
            let record = self.array(format!("{imgd}:Keywords"), "Bag", &added);
            self.push(record);
        }
        if let Some(caption) = content
            .description
            .as_ref()
            .filter(|_| !existing.has_description)
        {
            let dc = self.prefix(DC, "dc");
            let rdf = self.rdf.clone();
            let alt = Element::new(format!("{rdf}:Alt")).with_child(
                Element::new(format!("{rdf}:li"))
                    .with_attribute("xml:lang", "x-default")
                    .with_text(caption.clone()),
            );
            self.push(Element::new(format!("{dc}:description")).with_child(alt));
            self.push(Element::new(format!("{imgd}:Caption")).with_text(caption.clone()));
        }
        if let Some(rating) = content.rating.filter(|_| !existing.has_rating) {
            let xmp = self.prefix(XMP, "xmp");
            self.push(Element::new(format!("{xmp}:Rating")).with_text(rating.to_string()));
            self.push(Element::new(format!("{imgd}:Rating")).with_text(rating.to_string()));
        }
        for (name, value) in &content.properties {
            self.push(Element::new(format!("{imgd}:{name}")).with_text(value.clone()));
        }
        self.add_regions(content, existing, &imgd);
    }

    fn add_regions(&mut self, content: &SidecarContent, existing: &Existing, imgd: &str) {
        let new: Vec<&crate::FaceRegion> = content
            .faces
            .iter()
            .filter(|f| !existing.regions.contains(&f.signature()))
            .collect();
        if new.is_empty() {
            return;
        }
        let mwg = self.prefix(MWG_RS, "mwg-rs");
        let area = self.prefix(ST_AREA, "stArea");
        let dim = self.prefix(ST_DIM, "stDim");
        let rdf = self.rdf.clone();
        let items: Vec<Element> = new
            .iter()
            .map(|face| face.to_li(&rdf, &mwg, &area))
            .collect();
        let signatures: Vec<String> = new.iter().map(|f| f.signature()).collect();
        self.push(self.array(format!("{imgd}:Regions"), "Bag", &signatures));
        // Into the region list another program made, else a new one.
        let scope = self.scope.clone();
        if let Some((bag, _)) = region_bag(self.target, &scope) {
            bag.children.extend(items.into_iter().map(Node::Element));
            return;
        }
        let mut bag = Element::new(format!("{rdf}:Bag"));
        for item in items {
            bag = bag.with_child(item);
        }
        let mut regions = Element::new(format!("{mwg}:Regions"))
            .with_attribute(format!("{rdf}:parseType"), "Resource");
        if let Some((w, h)) = content.dimensions {
            regions = regions.with_child(
                Element::new(format!("{mwg}:AppliedToDimensions"))
                    .with_attribute(format!("{rdf}:parseType"), "Resource")
                    .with_child(Element::new(format!("{dim}:w")).with_text(w.to_string()))
                    .with_child(Element::new(format!("{dim}:h")).with_text(h.to_string()))
                    .with_child(Element::new(format!("{dim}:unit")).with_text("pixel")),
            );
        }
        regions = regions.with_child(Element::new(format!("{mwg}:RegionList")).with_child(bag));
        self.push(regions);
    }
}

/// Keeps one whitespace-only text node of each run, so that what a removal leaves behind does
/// not pile up over rewrites.
fn collapse_whitespace(children: &mut Vec<Node>) {
    let blank = |node: &Node| matches!(node, Node::Text(t) if t.trim().is_empty());
    let mut previous_blank = false;
    children.retain(|node| {
        let is_blank = blank(node);
        let keep = !(is_blank && previous_blank);
        previous_blank = is_blank;
        keep
    });
}

fn dedup(items: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !item.trim().is_empty() && !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}

impl crate::FaceRegion {
    /// Its identity across rewrites.
    pub fn signature(&self) -> String {
        signature(
            self.name.as_deref().unwrap_or_default(),
            [self.x, self.y, self.w, self.h],
        )
    }

    fn to_li(&self, rdf: &str, mwg: &str, area: &str) -> Element {
        let number = |local: &str, value: f64| {
            Element::new(format!("{area}:{local}")).with_text(format!("{value:.6}"))
        };
        let mut li = Element::new(format!("{rdf}:li"))
            .with_attribute(format!("{rdf}:parseType"), "Resource")
            .with_child(
                Element::new(format!("{mwg}:Area"))
                    .with_attribute(format!("{rdf}:parseType"), "Resource")
                    .with_child(number("x", self.x))
                    .with_child(number("y", self.y))
                    .with_child(number("w", self.w))
                    .with_child(number("h", self.h))
                    .with_child(Element::new(format!("{area}:unit")).with_text("normalized")),
            );
        if let Some(name) = &self.name {
            li = li.with_child(Element::new(format!("{mwg}:Name")).with_text(name.clone()));
        }
        li.with_child(Element::new(format!("{mwg}:Type")).with_text("Face"))
    }
}
