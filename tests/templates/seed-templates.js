// The three integration templates of the product document (the seed), copied unchanged from its
// "Integration Templates" section: Slack Notifications, HubSpot CRM Sync, Mailchimp List Sync.
// Do not edit them: tests/templates/run-templates.js runs them as they are, and the end-to-end
// test tests/e2e/templates.rs checks that the jq transforms of examples/30-integration-slack.yaml,
// 31-integration-hubspot.yaml and 32-integration-mailchimp.yaml send what they send.

// Slack webhook integration
app.post('/webhooks/slack', (req, res) => {
  const event = JSON.parse(req.body);
  
  const slackMessage = {
    text: `New ${event.data.event_type} event`,
    attachments: [{
      color: 'good',
      fields: [
        {
          title: 'Event Type',
          value: event.data.event_type,
          short: true
        },
        {
          title: 'Timestamp',
          value: event.timestamp,
          short: true
        }
      ]
    }]
  };
  
  // Send to Slack
  fetch(process.env.SLACK_WEBHOOK_URL, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(slackMessage)
  });
  
  res.status(200).send('OK');
});

// HubSpot contact sync
app.post('/webhooks/hubspot', (req, res) => {
  const event = JSON.parse(req.body);
  
  if (event.data.event_type === 'user.created') {
    const contact = {
      properties: {
        email: event.data.user.email,
        firstname: event.data.user.first_name,
        lastname: event.data.user.last_name,
        company: event.data.user.company_name,
        user_type: event.data.user.user_type,
        pitchey_user_id: event.data.user.id.toString()
      }
    };
    
    // Create contact in HubSpot
    fetch('https://api.hubapi.com/crm/v3/objects/contacts', {
      method: 'POST',
      headers: {
        'Authorization': `Bearer ${process.env.HUBSPOT_TOKEN}`,
        'Content-Type': 'application/json'
      },
      body: JSON.stringify(contact)
    });
  }
  
  res.status(200).send('OK');
});

// Mailchimp subscriber sync
app.post('/webhooks/mailchimp', (req, res) => {
  const event = JSON.parse(req.body);
  
  if (event.data.event_type === 'user.verified') {
    const subscriber = {
      email_address: event.data.user.email,
      status: 'subscribed',
      merge_fields: {
        FNAME: event.data.user.first_name,
        LNAME: event.data.user.last_name,
        USERTYPE: event.data.user.user_type
      },
      tags: [event.data.user.user_type, 'pitchey-user']
    };
    
    // Add to Mailchimp list
    fetch(`https://us1.api.mailchimp.com/3.0/lists/${process.env.MAILCHIMP_LIST_ID}/members`, {
      method: 'POST',
      headers: {
        'Authorization': `Bearer ${process.env.MAILCHIMP_TOKEN}`,
        'Content-Type': 'application/json'
      },
      body: JSON.stringify(subscriber)
    });
  }
  
  res.status(200).send('OK');
});
