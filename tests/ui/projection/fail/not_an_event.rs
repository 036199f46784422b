use annals::projection;

struct NotAnEvent;

#[derive(Default)]
struct Totals;

#[projection(name = "totals")]
impl Totals {
    #[on]
    fn seen(&mut self, _: &NotAnEvent) {}
}

fn main() {}
